import { describe, expect, it } from "@effect/vitest"
import { Option } from "effect"
import type { MasterRecord } from "../../src/domain/Records.js"
import { parseMasterView } from "../../src/domain/Records.js"
import type { ZkNode } from "../../src/ZooKeeper.js"
import { znode } from "./fixtures.js"

describe("parseMasterView", () => {
  it("is Absent when there is no znode", () => {
    expect(parseMasterView(Option.none())).toEqual({ _tag: "Absent" })
    expect(parseMasterView(Option.none(), znode("", { version: 3 }))).toEqual({ _tag: "Absent" })
  })

  const present: ReadonlyArray<{ readonly name: string; readonly data: string; readonly record: MasterRecord }> = [
    {
      name: "COMPAT record with the port as a string",
      data: `{"host": "10.0.0.1", "port": "6379", "name": "redis1"}`,
      record: { host: "10.0.0.1", port: 6379, name: "redis1" }
    },
    {
      name: "port as a number",
      data: `{"host":"10.0.0.2","port":6380,"name":"redis2"}`,
      record: { host: "10.0.0.2", port: 6380, name: "redis2" }
    },
    {
      name: "extra fields are ignored",
      data: `{"host":"db3.example","port":"7000","name":"redis3","version":"0.2.0","since":12345,"nested":{"a":1}}`,
      record: { host: "db3.example", port: 7000, name: "redis3" }
    },
    {
      name: "lowest and highest ports",
      data: `{"host":"h","port":"1","name":"n"}`,
      record: { host: "h", port: 1, name: "n" }
    },
    {
      name: "highest port as a number",
      data: `{"host":"h","port":65535,"name":"n"}`,
      record: { host: "h", port: 65535, name: "n" }
    },
    {
      name: "IPv6 host",
      data: `{"host":"::1","port":"6379","name":"v6"}`,
      record: { host: "::1", port: 6379, name: "v6" }
    }
  ]

  it.each(present)("Present: $name", ({ data, record }) => {
    const view = parseMasterView(znode(data, { version: 2, czxid: "77", mzxid: "79", ephemeralOwner: "abc123" }))
    expect(view).toEqual({
      _tag: "Present",
      record,
      version: 2,
      epoch: "77",
      owner: "abc123",
      epochVersion: null
    })
  })

  const malformed: ReadonlyArray<{ readonly name: string; readonly data: string; readonly reason: RegExp }> = [
    { name: "not JSON", data: `{"host": "10.0.0.1", "port": `, reason: /^not JSON$/ },
    { name: "empty data", data: ``, reason: /^not JSON$/ },
    { name: "JSON null", data: `null`, reason: /actual null/ },
    { name: "JSON array", data: `["10.0.0.1", "6379", "redis1"]`, reason: /Expected/ },
    { name: "a bare string", data: `"10.0.0.1:6379"`, reason: /Expected/ },
    { name: "missing name", data: `{"host":"10.0.0.1","port":"6379"}`, reason: /missing/ },
    { name: "missing host", data: `{"port":"6379","name":"redis1"}`, reason: /missing/ },
    { name: "missing port", data: `{"host":"10.0.0.1","name":"redis1"}`, reason: /missing/ },
    { name: "empty name", data: `{"host":"10.0.0.1","port":"6379","name":""}`, reason: /at least 1 character/ },
    { name: "empty host", data: `{"host":"","port":"6379","name":"redis1"}`, reason: /at least 1 character/ },
    { name: "port not digits", data: `{"host":"10.0.0.1","port":"redis","name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port with a sign", data: `{"host":"10.0.0.1","port":"-1","name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port as a float", data: `{"host":"10.0.0.1","port":6379.5,"name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port as boolean", data: `{"host":"10.0.0.1","port":true,"name":"redis1"}`, reason: /^port: must be a port between 1 and 65535/ },
    { name: "port string 0", data: `{"host":"10.0.0.1","port":"0","name":"redis1"}`, reason: /^port 0 out of range$/ },
    { name: "port string 70000", data: `{"host":"10.0.0.1","port":"70000","name":"redis1"}`, reason: /^port 70000 out of range$/ },
    { name: "port string 65536", data: `{"host":"10.0.0.1","port":"65536","name":"redis1"}`, reason: /^port 65536 out of range$/ },
    { name: "port number 0", data: `{"host":"10.0.0.1","port":0,"name":"redis1"}`, reason: /between 1 and 65535/ },
    { name: "port number 70000", data: `{"host":"10.0.0.1","port":70000,"name":"redis1"}`, reason: /between 1 and 65535/ },
    { name: "name as a number", data: `{"host":"10.0.0.1","port":"6379","name":1}`, reason: /Expected string/ }
  ]

  it.each(malformed)("Malformed: $name", ({ data, reason }) => {
    const view = parseMasterView(znode(data, { version: 5, czxid: "100", mzxid: "101", ephemeralOwner: "feed" }))
    expect(view._tag).toBe("Malformed")
    if (view._tag !== "Malformed") return
    expect(view.raw).toBe(data)
    expect(view.reason).toMatch(reason)
    expect(view).toMatchObject({ version: 5, epoch: "100", owner: "feed", epochVersion: null })
  })

  const epochCases: ReadonlyArray<{
    readonly name: string
    readonly epochNode: Option.Option<ZkNode>
    readonly expected: number | null
  }> = [
    { name: "no epoch node", epochNode: Option.none(), expected: null },
    { name: "epoch node last changed by the master's creation", epochNode: znode("", { version: 7, czxid: "3", mzxid: "500", ephemeralOwner: "0" }), expected: 7 },
    { name: "epoch node at version 0 changed by the creation", epochNode: znode("", { version: 0, czxid: "500", mzxid: "500", ephemeralOwner: "0" }), expected: 0 },
    { name: "epoch node changed after the master (a newer election)", epochNode: znode("", { version: 8, czxid: "3", mzxid: "501", ephemeralOwner: "0" }), expected: null },
    { name: "epoch node changed before the master (created without it)", epochNode: znode("", { version: 6, czxid: "3", mzxid: "499", ephemeralOwner: "0" }), expected: null },
    { name: "epoch czxid equal to the master's czxid does not count", epochNode: znode("", { version: 4, czxid: "500", mzxid: "600", ephemeralOwner: "0" }), expected: null }
  ]

  it.each(epochCases)("epochVersion: $name", ({ epochNode, expected }) => {
    const good = parseMasterView(znode(`{"host":"h","port":"6379","name":"n"}`, { czxid: "500", mzxid: "500" }), epochNode)
    expect(good._tag).toBe("Present")
    expect(good).toMatchObject({ epoch: "500", epochVersion: expected })
    // Malformed records carry it too, so they can be removed at the epoch they were seen.
    const bad = parseMasterView(znode(`garbage`, { czxid: "500", mzxid: "500" }), epochNode)
    expect(bad._tag).toBe("Malformed")
    expect(bad).toMatchObject({ epoch: "500", epochVersion: expected })
  })

  it("compares the epoch with the master's czxid, not its mzxid", () => {
    // The master znode's data was rewritten (mzxid 900) after its creation (czxid 500).
    const node = znode(`{"host":"h","port":"6379","name":"n"}`, { czxid: "500", mzxid: "900", version: 1 })
    expect(parseMasterView(node, znode("", { version: 3, mzxid: "500" }))).toMatchObject({ epochVersion: 3, version: 1 })
    expect(parseMasterView(node, znode("", { version: 3, mzxid: "900" }))).toMatchObject({ epochVersion: null })
  })
})

// ---------------------------------------------------------------------------------------------

