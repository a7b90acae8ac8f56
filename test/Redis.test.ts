import { describe, expect, it } from "@effect/vitest"
import type { RedisAddress, ReplicationInfo } from "../src/Redis.js"
import { formatAddress, parseInfo, parseReplication, sameAddress, supportsWritePause } from "../src/Redis.js"

// `INFO replication` of redis-server 7.0.15, captured from real servers (a master on 27101 with
// replicas on 27102-27104; the one on 27104 freshly restarted so it needs a full resync, slowed
// down with rdb-key-save-delay).

/** Master: two online replicas, a third waiting for the RDB. */
const MASTER = [
  "# Replication",
  "role:master",
  "connected_slaves:3",
  "slave0:ip=127.0.0.1,port=27102,state=online,offset=817959,lag=0",
  "slave1:ip=127.0.0.1,port=27103,state=online,offset=817959,lag=0",
  "slave2:ip=127.0.0.1,port=27104,state=wait_bgsave,offset=0,lag=0",
  "master_failover_state:no-failover",
  "master_replid:f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:817959",
  "second_repl_offset:-1",
  "repl_backlog_active:1",
  "repl_backlog_size:1048576",
  "repl_backlog_first_byte_offset:1",
  "repl_backlog_histlen:817959",
  ""
]

/** Replica with its link up. */
const REPLICA_UP = [
  "# Replication",
  "role:slave",
  "master_host:127.0.0.1",
  "master_port:27101",
  "master_link_status:up",
  "master_last_io_seconds_ago:3",
  "master_sync_in_progress:0",
  "slave_read_repl_offset:106",
  "slave_repl_offset:106",
  "slave_priority:100",
  "slave_read_only:1",
  "replica_announced:1",
  "connected_slaves:0",
  "master_failover_state:no-failover",
  "master_replid:f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:106",
  "second_repl_offset:-1",
  "repl_backlog_active:1",
  "repl_backlog_size:1048576",
  "repl_backlog_first_byte_offset:29",
  "repl_backlog_histlen:78",
  ""
]

/** Replica 4 s after its master was shut down. */
const REPLICA_DOWN = [
  "# Replication",
  "role:slave",
  "master_host:127.0.0.1",
  "master_port:27101",
  "master_link_status:down",
  "master_last_io_seconds_ago:-1",
  "master_sync_in_progress:0",
  "slave_read_repl_offset:818010",
  "slave_repl_offset:818010",
  "master_link_down_since_seconds:4",
  "slave_priority:100",
  "slave_read_only:1",
  "replica_announced:1",
  "connected_slaves:0",
  "master_failover_state:no-failover",
  "master_replid:f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:818010",
  "second_repl_offset:-1",
  "repl_backlog_active:1",
  "repl_backlog_size:1048576",
  "repl_backlog_first_byte_offset:29",
  "repl_backlog_histlen:817982",
  ""
]

/** Replica during a full resync (its offset is the stale one of its previous history). */
const REPLICA_SYNCING = [
  "# Replication",
  "role:slave",
  "master_host:127.0.0.1",
  "master_port:27101",
  "master_link_status:down",
  "master_last_io_seconds_ago:-1",
  "master_sync_in_progress:1",
  "slave_read_repl_offset:120",
  "slave_repl_offset:120",
  "master_sync_total_bytes:0",
  "master_sync_read_bytes:49123",
  "master_sync_left_bytes:-49123",
  "master_sync_perc:0.00",
  "master_sync_last_io_seconds_ago:0",
  "master_link_down_since_seconds:-1",
  "slave_priority:100",
  "slave_read_only:1",
  "replica_announced:1",
  "connected_slaves:0",
  "master_failover_state:no-failover",
  "master_replid:406ba15babade09e4b026ace104291a947f3b038",
  "master_replid2:f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  "master_repl_offset:120",
  "second_repl_offset:121",
  "repl_backlog_active:1",
  "repl_backlog_size:1048576",
  "repl_backlog_first_byte_offset:121",
  "repl_backlog_histlen:0",
  ""
]

/** A standalone master that has never had a replica. */
const STANDALONE = [
  "# Replication",
  "role:master",
  "connected_slaves:0",
  "master_failover_state:no-failover",
  "master_replid:a9509a36154627023a144517752e251e874b82cd",
  "master_replid2:0000000000000000000000000000000000000000",
  "master_repl_offset:0",
  "second_repl_offset:-1",
  "repl_backlog_active:0",
  "repl_backlog_size:1048576",
  "repl_backlog_first_byte_offset:0",
  "repl_backlog_histlen:0",
  ""
]

const expectations: ReadonlyArray<{ readonly name: string; readonly lines: ReadonlyArray<string>; readonly info: ReplicationInfo }> = [
  {
    name: "master with two online replicas and one in wait_bgsave",
    lines: MASTER,
    info: {
      role: "master",
      master: null,
      linkUp: true,
      linkDownSinceSeconds: null,
      syncInProgress: false,
      offset: 817959,
      replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
      replicas: [
        { host: "127.0.0.1", port: 27102, state: "online", offset: 817959 },
        { host: "127.0.0.1", port: 27103, state: "online", offset: 817959 }
      ]
    }
  },
  {
    name: "replica with its link up",
    lines: REPLICA_UP,
    info: {
      role: "replica",
      master: { host: "127.0.0.1", port: 27101 },
      linkUp: true,
      linkDownSinceSeconds: null,
      syncInProgress: false,
      offset: 106,
      replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
      replicas: []
    }
  },
  {
    name: "replica with its link down",
    lines: REPLICA_DOWN,
    info: {
      role: "replica",
      master: { host: "127.0.0.1", port: 27101 },
      linkUp: false,
      linkDownSinceSeconds: 4,
      syncInProgress: false,
      offset: 818010,
      replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
      replicas: []
    }
  },
  {
    name: "replica during a full sync",
    lines: REPLICA_SYNCING,
    info: {
      role: "replica",
      master: { host: "127.0.0.1", port: 27101 },
      linkUp: false,
      linkDownSinceSeconds: -1,
      syncInProgress: true,
      offset: 120,
      replid: "406ba15babade09e4b026ace104291a947f3b038",
      replicas: []
    }
  },
  {
    name: "standalone master",
    lines: STANDALONE,
    info: {
      role: "master",
      master: null,
      linkUp: true,
      linkDownSinceSeconds: null,
      syncInProgress: false,
      offset: 0,
      replid: "a9509a36154627023a144517752e251e874b82cd",
      replicas: []
    }
  }
]

describe("parseReplication", () => {
  const table = expectations.flatMap((e) => [
    { ...e, eol: "\\r\\n", text: e.lines.join("\r\n") },
    { ...e, eol: "\\n", text: e.lines.join("\n") }
  ])

  it.each(table)("$name ($eol)", ({ text, info }) => {
    expect(parseReplication(text)).toEqual(info)
  })

  it("really exercises \\r\\n: no value keeps a trailing \\r", () => {
    const text = REPLICA_DOWN.join("\r\n")
    expect(text).toContain("\r\n")
    const map = parseInfo(text)
    for (const [key, value] of map) {
      expect(`${key}=${value}`).not.toMatch(/\r/)
    }
    expect(map.get("master_link_status")).toBe("down")
    expect(parseReplication(text).linkUp).toBe(false)
  })

  it("reads the sections of a full INFO text", () => {
    const text = ["# Server", "redis_version:7.0.15", "tcp_port:6379", "", ...MASTER, "# CPU", "used_cpu_sys:1.5", ""].join("\r\n")
    expect(parseReplication(text)).toEqual(expectations[0]!.info)
  })

  it("reads an IPv6 master and replicas", () => {
    const replica = REPLICA_UP.map((l) => (l === "master_host:127.0.0.1" ? "master_host:::1" : l)).join("\r\n")
    expect(parseReplication(replica).master).toEqual({ host: "::1", port: 27101 })
    const master = MASTER.map((l) => l.replace("ip=127.0.0.1", "ip=fe80::1")).join("\r\n")
    expect(parseReplication(master).replicas.map((r) => r.host)).toEqual(["fe80::1", "fe80::1"])
  })

  it("keeps only online replicas on a master", () => {
    const text = [
      "role:master",
      "slave0:ip=10.0.0.2,port=6379,state=wait_bgsave,offset=0,lag=0",
      "slave1:ip=10.0.0.3,port=6379,state=send_bulk,offset=0,lag=0",
      "slave2:ip=10.0.0.4,port=6380,state=online,offset=99,lag=1",
      "master_repl_offset:100"
    ].join("\n")
    expect(parseReplication(text).replicas).toEqual([{ host: "10.0.0.4", port: 6380, state: "online", offset: 99 }])
  })

  it("treats a missing or unknown role as master, and a missing offset as 0", () => {
    expect(parseReplication("")).toEqual({
      role: "master",
      master: null,
      linkUp: true,
      linkDownSinceSeconds: null,
      syncInProgress: false,
      offset: 0,
      replid: "",
      replicas: []
    })
  })

  it("reads a replica that never connected (no link-down seconds, negative offset)", () => {
    const text = ["role:slave", "master_host:10.0.0.1", "master_port:6379", "master_link_status:down", "slave_repl_offset:-1"].join(
      "\r\n"
    )
    expect(parseReplication(text)).toMatchObject({
      role: "replica",
      master: { host: "10.0.0.1", port: 6379 },
      linkUp: false,
      linkDownSinceSeconds: -1,
      offset: 0
    })
  })
})

describe("parseInfo", () => {
  it("maps every key to its value, skipping comments, blank and colon-less lines", () => {
    const text = "# Replication\r\nrole:slave\r\n\r\nmaster_host:::1\r\nnot a field\r\n:novalue\r\nempty:\r\n"
    expect([...parseInfo(text)]).toEqual([
      ["role", "slave"],
      ["master_host", "::1"],
      ["empty", ""]
    ])
  })

  it("keeps the last value of a repeated key", () => {
    expect(parseInfo("a:1\na:2").get("a")).toBe("2")
  })
})

describe("formatAddress", () => {
  it.each([
    [{ host: "10.0.0.1", port: 6379 }, "10.0.0.1:6379"],
    [{ host: "localhost", port: 6380 }, "localhost:6380"],
    [{ host: "redis-1.example.com", port: 1 }, "redis-1.example.com:1"],
    [{ host: "::1", port: 6379 }, "[::1]:6379"],
    [{ host: "fe80::1:2", port: 65535 }, "[fe80::1:2]:65535"],
    [{ host: "2001:db8::ff00:42:8329", port: 7000 }, "[2001:db8::ff00:42:8329]:7000"]
  ] as ReadonlyArray<[RedisAddress, string]>)("%j → %s", (address, text) => {
    expect(formatAddress(address)).toBe(text)
  })
})

describe("sameAddress", () => {
  const cases: ReadonlyArray<[string, RedisAddress, RedisAddress, boolean]> = [
    ["identical", { host: "10.0.0.1", port: 6379 }, { host: "10.0.0.1", port: 6379 }, true],
    ["localhost vs 127.0.0.1", { host: "localhost", port: 6379 }, { host: "127.0.0.1", port: 6379 }, true],
    ["localhost vs localhost", { host: "localhost", port: 6379 }, { host: "localhost", port: 6379 }, true],
    ["::1 vs 127.0.0.1 (both loopback)", { host: "::1", port: 6379 }, { host: "127.0.0.1", port: 6379 }, true],
    ["[::1] vs ::1 (brackets)", { host: "[::1]", port: 6379 }, { host: "::1", port: 6379 }, true],
    ["[::1] vs localhost", { host: "[::1]", port: 6379 }, { host: "localhost", port: 6379 }, true],
    ["same host, other port", { host: "10.0.0.1", port: 6379 }, { host: "10.0.0.1", port: 6380 }, false],
    ["localhost vs 127.0.0.1, other port", { host: "localhost", port: 6379 }, { host: "127.0.0.1", port: 6380 }, false],
    ["other hosts", { host: "10.0.0.1", port: 6379 }, { host: "10.0.0.2", port: 6379 }, false],
    ["localhost vs a LAN address", { host: "localhost", port: 6379 }, { host: "10.0.0.1", port: 6379 }, false],
    ["127.0.0.2 is not localhost", { host: "127.0.0.2", port: 6379 }, { host: "localhost", port: 6379 }, false],
    ["hostnames are compared as written", { host: "redis1", port: 6379 }, { host: "redis2", port: 6379 }, false],
    ["other IPv6 hosts", { host: "fe80::1", port: 6379 }, { host: "fe80::2", port: 6379 }, false]
  ]

  it.each(cases)("%s", (_, a, b, same) => {
    expect(sameAddress(a, b)).toBe(same)
    expect(sameAddress(b, a)).toBe(same)
  })
})

describe("supportsWritePause (CLIENT PAUSE … WRITE needs Redis 6.2)", () => {
  const rows: ReadonlyArray<readonly [string, boolean]> = [
    ["7.2.4", true],
    ["6.2.0", true],
    ["6.2.14", true],
    ["8.0.1", true],
    ["6.0.16", false],
    ["5.0.14", false],
    ["", false],
    ["unknown", false]
  ]
  for (const [version, ok] of rows) it(`${JSON.stringify(version)}: ${ok}`, () => expect(supportsWritePause(version)).toBe(ok))
})
