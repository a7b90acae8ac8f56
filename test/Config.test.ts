import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Either } from "effect"
import type { DictatorConfigData, LoadedConfig } from "../src/Config.js"
import {
  closestKey,
  ConfigError,
  editDistance,
  jsonErrorLocation,
  knownKeys,
  knownNodeKeys,
  knownNodesEntryKeys,
  localNodes,
  nodeConfig,
  parseConfig
} from "../src/Config.js"

const FILE = "/etc/dictator/dictator.conf"

const defaults: DictatorConfigData = {
  // DESIGN.md §4: the original's defaults
  svc_name: "default",
  log_level: "INFO",
  http_port: 8000,
  zk_hosts: ["localhost:2181"],
  node: { name: "local", host: "localhost", port: 6379, loading_timeout: 30, priority: 100 },
  // new keys (README.md)
  log_format: "logfmt",
  http_host: "0.0.0.0",
  zk_session_timeout_ms: 6000,
  zk_connect_timeout_ms: 3000,
  check_interval_ms: 100,
  check_timeout_ms: 250,
  down_after_ms: 1000,
  election_step_ms: 150,
  fence_after_ms: 1000,
  handover_timeout_ms: 3000,
  min_replicas_to_write: 1,
  min_replicas_max_lag: 2,
  http_legacy_get: false,
  max_lag_on_failover: 1048576,
  quorum: null,
  failsafe: false,
  kill_clients_on_role_change: true,
  on_role_change_timeout_ms: 10000
}

const ok = (text: string, file = FILE): LoadedConfig => {
  const r = parseConfig(file, text)
  if (Either.isLeft(r)) throw new Error(`expected a valid config, got: ${r.left.message}`)
  return r.right
}

const err = (text: string, file = FILE): ConfigError => {
  const r = parseConfig(file, text)
  if (Either.isRight(r)) throw new Error(`expected a ConfigError, got: ${JSON.stringify(r.right.config)}`)
  expect(r.left).toBeInstanceOf(ConfigError)
  expect(r.left._tag).toBe("ConfigError")
  expect(r.left.file).toBe(file)
  return r.left
}

describe("parseConfig: valid files", () => {
  it("decodes the original seed config with every default", () => {
    const seed = `{"svc_name":"default","log_level":"INFO","zk_hosts":["127.0.0.1"],"node":{"name":"local","host":"127.0.0.1","port":6379}}`
    const loaded = ok(seed)
    expect(loaded.file).toBe(FILE)
    expect(loaded.warnings).toEqual([])
    expect(loaded.config).toEqual({
      ...defaults,
      zk_hosts: ["127.0.0.1"],
      node: { ...defaults.node, host: "127.0.0.1" }
    })
  })

  it("decodes the DESIGN.md §4 example", () => {
    const text = `{ "svc_name": "default", "log_level": "INFO", "http_port": 8000, "zk_hosts": ["127.0.0.1"],
      "node": { "name": "local", "host": "127.0.0.1", "port": 6379, "loading_timeout": 30 } }`
    expect(ok(text)).toEqual({
      file: FILE,
      warnings: [],
      config: { ...defaults, zk_hosts: ["127.0.0.1"], node: { ...defaults.node, host: "127.0.0.1" } }
    })
  })

  it("gives every default for {}", () => {
    expect(ok("{}")).toEqual({ file: FILE, config: defaults, warnings: [] })
  })

  it("gives the node defaults for an empty node object", () => {
    expect(ok(`{"node": {}}`).config.node).toEqual(defaults.node)
  })

  it("refuses an on_role_change that is not a non-empty argv array", () => {
    for (const bad of ['"/bin/hook arg"', "[]", '[""]', "[1]"]) {
      expect(err(`{"on_role_change": ${bad}}`).message, bad).toContain('key "on_role_change"')
    }
    expect(err('{"on_role_change_timeout_ms": 50}').message).toContain("between 100 and 600000")
    expect(err('{"announce_port": 0}').message).toContain("port between 1 and 65535")
  })

  it("keeps every explicit value", () => {
    const all = {
      svc_name: "cache-1.eu_west",
      log_level: "ERROR",
      log_format: "json",
      http_port: 1,
      http_host: "127.0.0.1",
      http_legacy_get: true,
      zk_hosts: ["zk1:2181", "zk2", "10.0.0.9:65535"],
      zk_session_timeout_ms: 120000,
      zk_connect_timeout_ms: 100,
      check_interval_ms: 10,
      check_timeout_ms: 10000,
      down_after_ms: 10000,
      election_step_ms: 0,
      fence_after_ms: 0,
      handover_timeout_ms: 60000,
      min_replicas_to_write: 0,
      min_replicas_max_lag: 3600,
      max_lag_on_failover: -1,
      quorum: 3,
      failsafe: true,
      kill_clients_on_role_change: false,
      announce_host: "203.0.113.7",
      announce_port: 16379,
      on_role_change: ["/usr/local/bin/hook", "--quiet"],
      on_role_change_timeout_ms: 100,
      node: { name: "redis-1", host: "db1.example", port: 65535, loading_timeout: 0.5, priority: 0 }
    }
    expect(ok(JSON.stringify(all)).config).toEqual(all)
  })

  it.each([
    ["INFO", "INFO"],
    ["info", "INFO"],
    ["Debug", "DEBUG"],
    ["debug", "DEBUG"],
    ["WARN", "WARN"],
    ["warn", "WARN"],
    ["WARNING", "WARN"],
    ["warning", "WARN"],
    ["Error", "ERROR"],
    ["fatal", "FATAL"],
    [" info ", "INFO"]
  ])("log_level %j is %s", (given, level) => {
    expect(ok(JSON.stringify({ log_level: given })).config.log_level).toBe(level)
  })

  it("warns about unknown top-level and node keys, naming the key and the file", () => {
    const file = "/tmp/my dictator.conf"
    const loaded = ok(`{"svc_name":"s","colour":"blue","zk_timeout":5,"node":{"name":"n","hostname":"x","rack":1}}`, file)
    expect(loaded.config.svc_name).toBe("s")
    expect(loaded.config.node).toEqual({ ...defaults.node, name: "n" })
    expect(loaded.warnings).toEqual([
      `unknown key "colour" in ${file} is ignored`,
      `unknown key "zk_timeout" in ${file} is ignored`,
      `unknown key "node.hostname" in ${file} is ignored`,
      `unknown key "node.rack" in ${file} is ignored`
    ])
  })

  it("the discovery endpoint is off unless sentinel_port is set; its keys are kept as given", () => {
    const off = ok(`{}`)
    expect(off.config.sentinel_port).toBeUndefined()
    expect(off.config.sentinel_host).toBeUndefined()
    expect(off.config.sentinel_password_file).toBeUndefined()
    const on = ok(`{"sentinel_port": 26379, "sentinel_host": "10.0.0.1", "sentinel_password_file": "/run/secrets/sentinel"}`)
    expect(on.config).toMatchObject({ sentinel_port: 26379, sentinel_host: "10.0.0.1", sentinel_password_file: "/run/secrets/sentinel" })
    expect(on.warnings).toEqual([])
  })

  it("accepts check_timeout_ms equal to down_after_ms", () => {
    expect(ok(`{"check_timeout_ms": 500, "down_after_ms": 500}`).config).toMatchObject({
      check_timeout_ms: 500,
      down_after_ms: 500
    })
  })
})

describe("parseConfig: bad values", () => {
  const PORT = "must be an integer port between 1 and 65535"
  const NAME = "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
  const HOSTS = 'must be a non-empty array of "host" or "host:port" (host names or IPv4 addresses: the ZooKeeper client cannot take IPv6 literals)'
  const cases: ReadonlyArray<{
    readonly name: string
    readonly text: string
    /** The whole message after `invalid configuration FILE: `: key path, value, what is allowed. */
    readonly detail: string
  }> = [
    { name: "http_port 0", text: `{"http_port": 0}`, detail: `key "http_port" = 0: ${PORT}` },
    { name: "http_port 70000", text: `{"http_port": 70000}`, detail: `key "http_port" = 70000: ${PORT}` },
    { name: "http_port 80.5", text: `{"http_port": 80.5}`, detail: `key "http_port" = 80.5: ${PORT}` },
    { name: `http_port "80"`, text: `{"http_port": "80"}`, detail: `key "http_port" = "80": ${PORT}` },
    { name: "http_port null", text: `{"http_port": null}`, detail: `key "http_port" = null: ${PORT}` },
    { name: "zk_hosts []", text: `{"zk_hosts": []}`, detail: `key "zk_hosts" = []: ${HOSTS}` },
    { name: `zk_hosts "x"`, text: `{"zk_hosts": "x"}`, detail: `key "zk_hosts" = "x": ${HOSTS}` },
    { name: `zk_hosts ["bad host!"]`, text: `{"zk_hosts": ["bad host!"]}`, detail: `key "zk_hosts" = ["bad host!"]: ${HOSTS}` },
    {
      name: "zk_hosts with one bad host among good ones",
      text: `{"zk_hosts": ["zk1:2181", "zk2:123456"]}`,
      detail: `key "zk_hosts" = ["zk1:2181","zk2:123456"]: ${HOSTS}`
    },
    { name: "zk_hosts [5]", text: `{"zk_hosts": [5]}`, detail: `key "zk_hosts" = [5]: ${HOSTS}` },
    { name: "zk_hosts IPv6 literal", text: `{"zk_hosts": ["[::1]:2182"]}`, detail: `key "zk_hosts" = ["[::1]:2182"]: ${HOSTS}` },
    { name: "node.port -1", text: `{"node": {"port": -1}}`, detail: `key "node.port" = -1: ${PORT}` },
    { name: "node.port 0", text: `{"node": {"port": 0}}`, detail: `key "node.port" = 0: ${PORT}` },
    { name: `node.port "6379"`, text: `{"node": {"port": "6379"}}`, detail: `key "node.port" = "6379": ${PORT}` },
    {
      name: "node.priority -1",
      text: `{"node": {"priority": -1}}`,
      detail: `key "node.priority" = -1: must be an integer between 0 (never master) and 1000000`
    },
    {
      name: "node.loading_timeout -1",
      text: `{"node": {"loading_timeout": -1}}`,
      detail: `key "node.loading_timeout" = -1: must be a number of seconds between 0 and 86400`
    },
    { name: "node.name with a slash", text: `{"node": {"name": "a/b"}}`, detail: `key "node.name" = "a/b": ${NAME}` },
    {
      name: "node.host empty",
      text: `{"node": {"host": ""}}`,
      detail: `key "node.host" = "": must be a non-empty string without surrounding spaces`
    },
    { name: "node 5", text: `{"node": 5}`, detail: `key "node" = 5: must be a JSON object` },
    { name: `svc_name "a/b"`, text: `{"svc_name": "a/b"}`, detail: `key "svc_name" = "a/b": ${NAME}` },
    { name: "svc_name empty", text: `{"svc_name": ""}`, detail: `key "svc_name" = "": ${NAME}` },
    { name: "svc_name 129 characters", text: `{"svc_name": "${"s".repeat(129)}"}`, detail: `key "svc_name" = "${"s".repeat(56)}...: ${NAME}` },
    { name: `log_format "xml"`, text: `{"log_format": "xml"}`, detail: `key "log_format" = "xml": must be "logfmt" or "json"` },
    {
      name: `log_level "LOUD"`,
      text: `{"log_level": "LOUD"}`,
      detail: `key "log_level" = "LOUD": must be one of DEBUG, INFO, WARN, ERROR, FATAL`
    },
    { name: "log_level 5", text: `{"log_level": 5}`, detail: `key "log_level" = 5: must be one of DEBUG, INFO, WARN, ERROR, FATAL` },
    {
      name: "check_interval_ms 5",
      text: `{"check_interval_ms": 5}`,
      detail: `key "check_interval_ms" = 5: must be an integer number of milliseconds between 10 and 10000`
    },
    {
      name: "min_replicas_to_write 101",
      text: `{"min_replicas_to_write": 101}`,
      detail: `key "min_replicas_to_write" = 101: must be an integer between 0 and 100`
    },
    {
      name: "check_timeout_ms > down_after_ms",
      text: `{"check_timeout_ms": 2000, "down_after_ms": 1000}`,
      detail: `key "check_timeout_ms" = 2000: must not exceed down_after_ms (1000)`
    },
    { name: "sentinel_port 0", text: `{"sentinel_port": 0}`, detail: `key "sentinel_port" = 0: ${PORT}` },
    { name: `sentinel_port "26379"`, text: `{"sentinel_port": "26379"}`, detail: `key "sentinel_port" = "26379": ${PORT}` },
    {
      name: "sentinel_host empty",
      text: `{"sentinel_host": ""}`,
      detail: `key "sentinel_host" = "": must be a non-empty string without surrounding spaces`
    },
    {
      name: "sentinel_password_file a number",
      text: `{"sentinel_password_file": 5}`,
      detail: `key "sentinel_password_file" = 5: must be a non-empty string without surrounding spaces`
    },
    {
      name: "check_timeout_ms > default down_after_ms",
      text: `{"check_timeout_ms": 1001}`,
      detail: `key "check_timeout_ms" = 1001: must not exceed down_after_ms (1000)`
    }
  ]

  it.each(cases)("$name", ({ text, detail }) => {
    const e = err(text)
    expect(e.detail).toBe(detail)
    expect(e.message).toBe(`invalid configuration ${FILE}: ${detail}`)
  })

  it("names the file it was given", () => {
    expect(err(`{"http_port": 0}`, "./conf/a b.json").message).toBe(`invalid configuration ./conf/a b.json: key "http_port" = 0: ${PORT}`)
  })

  it("reports invalid JSON with the file, a line and column, and the parser's complaint", () => {
    const e = err(`{"svc_name": "default",}`)
    expect(e.message).toMatch(
      new RegExp(`^invalid configuration ${FILE}: not valid JSON at line 1, column 24 \\(.+\\); fix the syntax of the file$`)
    )
    expect(e.message).not.toMatch(/position/)
  })

  it.each([
    ["a missing comma on line 3", `{\n  "svc_name": "a",\n  "http_port": 8000\n  "zk_hosts": []\n}`, 4, 3],
    ["a trailing comma", `{\n  "node": {\n    "port": 6379,\n  }\n}`, 4, 3],
    ["a truncated file", `{\n  "node": {"port": 6379}\n`, 3, 1],
    ["an empty file", ``, 1, 1],
    ["garbage after the object", `{}\nx`, 2, 1]
  ])("locates %s at line %i, column %i", (_, text, line, column) => {
    expect(err(text).detail).toMatch(new RegExp(`^not valid JSON at line ${line}, column ${column} \\(`))
  })

  it("jsonErrorLocation reads either V8 wording and counts from 1", () => {
    const text = `{\n  "a": 1\n  "b": 2\n}`
    expect(jsonErrorLocation(text, "Expected ',' or '}' after property value in JSON at position 13")).toEqual({
      line: 3,
      column: 3,
      what: "Expected ',' or '}' after property value in JSON"
    })
    expect(
      jsonErrorLocation(text, "Expected ',' or '}' after property value in JSON at position 13 (line 3 column 3)")
    ).toEqual({ line: 3, column: 3, what: "Expected ',' or '}' after property value in JSON" })
    expect(jsonErrorLocation("{", "Unexpected end of JSON input")).toEqual({ line: 1, column: 2, what: "Unexpected end of JSON input" })
  })

  it.each([
    ["an empty file", ""],
    ["a truncated object", `{"node": {"port": 6379}`],
    ["single quotes", `{'svc_name': 'x'}`]
  ])("reports %s as invalid JSON", (_, text) => {
    expect(err(text).message).toMatch(new RegExp(`^invalid configuration ${FILE}: not valid JSON at line \\d+, column \\d+ \\(`))
  })

  it.each([
    ["a JSON array", `[{"svc_name": "default"}]`],
    ["JSON null", `null`],
    ["a JSON string", `"default"`],
    ["a JSON number", `8000`]
  ])("reports %s as not an object", (_, text) => {
    expect(err(text, "/x.conf").message).toBe(
      `invalid configuration /x.conf: the file must hold one JSON object like {"svc_name": "default", ...}`
    )
  })

  it("reports several bad keys in one message, each once", () => {
    const e = err(`{"http_port": 0, "svc_name": "a/b", "node": {"port": -1, "priority": -1}, "log_format": "xml", "zk_hosts": []}`)
    const parts = e.detail.split("; ")
    expect([...parts].sort()).toEqual(
      [
        `key "http_port" = 0: ${PORT}`,
        `key "svc_name" = "a/b": ${NAME}`,
        `key "node.port" = -1: ${PORT}`,
        `key "node.priority" = -1: must be an integer between 0 (never master) and 1000000`,
        `key "log_format" = "xml": must be "logfmt" or "json"`,
        `key "zk_hosts" = []: ${HOSTS}`
      ].sort()
    )
    expect(e.message).not.toContain("\n")
    expect(e.message).not.toContain("Expected")
  })

  it("shortens a long bad value", () => {
    const long = "x".repeat(200)
    const m = err(JSON.stringify({ zk_hosts: long })).message
    expect(m).toContain(`key "zk_hosts" = "${"x".repeat(56)}...: `)
    expect(m).not.toContain("x".repeat(100))
  })
})

describe("parseConfig: typo'd keys", () => {
  it.each([
    [`{"zk_host": ["zk1"]}`, `unknown key "zk_host": did you mean "zk_hosts"?`],
    [`{"node": {"prioirty": 0}}`, `unknown key "node.prioirty": did you mean "node.priority"?`],
    [`{"loglevel": "DEBUG"}`, `unknown key "loglevel": did you mean "log_level"?`],
    [`{"http-port": 8001}`, `unknown key "http-port": did you mean "http_port"?`],
    [`{"HTTP_PORT": 8001}`, `unknown key "HTTP_PORT": did you mean "http_port"?`],
    [`{"svcname": "x"}`, `unknown key "svcname": did you mean "svc_name"?`],
    [`{"node": {"Port": 1}}`, `unknown key "node.Port": did you mean "node.port"?`],
    [`{"node": {"hots": "a"}}`, `unknown key "node.hots": did you mean "node.host"?`],
    [`{"priority": 0}`, `unknown key "priority": did you mean "node.priority"?`],
    [`{"fence_after": 500}`, `unknown key "fence_after": did you mean "fence_after_ms"?`]
  ])("%s is an error naming the key it resembles", (text, detail) => {
    const e = err(text)
    expect(e.detail).toBe(detail)
    expect(e.message).toBe(`invalid configuration ${FILE}: ${detail}`)
  })

  it("lists every typo in one message and keeps far-off keys as warnings", () => {
    expect(err(`{"zk_host": [], "colour": 1, "node": {"nmae": "x"}}`).detail).toBe(
      `unknown key "zk_host": did you mean "zk_hosts"?; unknown key "node.nmae": did you mean "node.name"?`
    )
  })

  it("editDistance counts a swapped pair as one edit", () => {
    expect(editDistance("prioirty", "priority")).toBe(1)
    expect(editDistance("zk_host", "zk_hosts")).toBe(1)
    expect(editDistance("", "abc")).toBe(3)
    expect(editDistance("kitten", "sitting")).toBe(3)
    expect(editDistance("same", "same")).toBe(0)
  })

  it("closestKey: short keys allow one edit, longer ones two; far keys have no suggestion", () => {
    expect(closestKey("rack", knownNodeKeys)).toBeUndefined()
    expect(closestKey("nam", knownNodeKeys)).toBe("name")
    expect(closestKey("colour", knownKeys)).toBeUndefined()
    expect(closestKey("zk_timeout", knownKeys)).toBeUndefined()
    expect(closestKey("down_after", knownKeys)).toBe("down_after_ms")
    expect(closestKey("after_ms", knownKeys)).toBeUndefined()
    expect(closestKey("down_aftr_ms", knownKeys)).toBe("down_after_ms")
  })

  it("the nearest key wins", () => {
    expect(closestKey("http_prot", knownKeys)).toBe("http_port")
    expect(closestKey("http_hots", knownKeys)).toBe("http_host")
  })
})

describe("examples/dictator.conf", () => {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const sample = path.join(here, "..", "examples", "dictator.conf")
  const text = readFileSync(sample, "utf8")

  it("parses without an error or a warning", () => {
    const loaded = ok(text, sample)
    expect(loaded.warnings).toEqual([])
    expect(loaded.config.svc_name).toBe("orders")
  })

  it("sets every key of the schema, top-level and node (nodes: in examples/dictator-multi.conf)", () => {
    const json = JSON.parse(text) as Record<string, unknown>
    expect(Object.keys(json).sort()).toEqual(knownKeys.filter((k) => k !== "nodes").sort())
    expect(Object.keys(json["node"] as object).sort()).toEqual([...knownNodeKeys].sort())
  })

  it("examples/dictator-multi.conf parses without a warning and its nodes set every entry key", () => {
    const multi = path.join(here, "..", "examples", "dictator-multi.conf")
    const multiText = readFileSync(multi, "utf8")
    const loaded = ok(multiText, multi)
    expect(loaded.warnings).toEqual([])
    expect(localNodes(loaded.config).map((n) => n.service)).toEqual(["orders", "sessions", "carts"])
    const entries = (JSON.parse(multiText) as { nodes: Array<Record<string, unknown>> }).nodes
    expect([...new Set(entries.flatMap((e) => Object.keys(e)))].sort()).toEqual([...knownNodesEntryKeys].sort())
  })

  it("every key of the schema has a row in README's config table", () => {
    const readme = readFileSync(path.join(here, "..", "README.md"), "utf8")
    for (const key of [...knownKeys.filter((k) => k !== "node"), ...knownNodeKeys.map((k) => `node.${k}`), "nodes[].service"]) {
      expect(readme, key).toContain(`| \`${key}\` |`)
    }
  })
})

describe("parseConfig: several local nodes (nodes: [...])", () => {
  it("gives each entry the node defaults and svc_name as its service unless it names one", () => {
    const loaded = ok('{"svc_name": "orders", "nodes": [{"name": "a", "port": 6380}, {"service": "carts", "name": "a", "port": 6381, "priority": 0}]}')
    const nodes = localNodes(loaded.config)
    expect(nodes).toEqual([
      { service: "orders", node: { name: "a", host: "localhost", port: 6380, loading_timeout: 30, priority: 100 } },
      { service: "carts", node: { name: "a", host: "localhost", port: 6381, loading_timeout: 30, priority: 0 } }
    ])
    // What one node's services read: the shared keys, its own service and node.
    const carts = nodeConfig(loaded.config, nodes[1]!)
    expect(carts.svc_name).toBe("carts")
    expect(carts.node.port).toBe(6381)
    expect(carts.nodes).toBeUndefined()
    expect(carts.check_interval_ms).toBe(loaded.config.check_interval_ms)
  })

  it("the single form is one local node of svc_name", () => {
    const loaded = ok('{"svc_name": "orders", "node": {"name": "r1"}}')
    expect(localNodes(loaded.config)).toEqual([{ service: "orders", node: loaded.config.node }])
  })

  it("refuses node and nodes together, two nodes of one service, sentinel_port, an empty list", () => {
    expect(err('{"node": {}, "nodes": [{"name": "a"}]}').message).toContain('keys "node" and "nodes" together')
    expect(err('{"nodes": [{"service": "s", "name": "a"}, {"service": "s", "name": "b", "port": 6380}]}').message).toContain(
      'key "nodes.1.service" = "s": another entry of "nodes" already belongs to that service'
    )
    expect(err('{"svc_name": "s", "nodes": [{"name": "a"}, {"service": "s", "name": "b"}]}').message).toContain('"nodes.1.service"')
    expect(err('{"sentinel_port": 26379, "nodes": [{"name": "a"}]}').message).toContain('key "sentinel_port" with "nodes"')
    expect(err('{"nodes": []}').message).toContain('key "nodes"')
    expect(err('{"nodes": [{"service": "bad name!"}]}').message).toContain('key "nodes.0.service"')
  })

  it("names a typo'd key of an entry with its index", () => {
    expect(err('{"nodes": [{"name": "a"}, {"name": "b", "prioirty": 1}]}').message).toContain(
      'unknown key "nodes.1.prioirty": did you mean "nodes.1.priority"?'
    )
  })
})
