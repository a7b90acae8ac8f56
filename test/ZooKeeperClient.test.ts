import { describe, expect, it } from "@effect/vitest"
import { createRequire } from "node:module"
import { connectionString } from "../src/ZooKeeperClient.js"

describe("connectionString", () => {
  it.each([
    [["127.0.0.1"], "127.0.0.1:2181"],
    [["localhost"], "localhost:2181"],
    [["zk1.example.com"], "zk1.example.com:2181"],
    [["zk1:2182"], "zk1:2182"],
    [["127.0.0.1:2181"], "127.0.0.1:2181"],
    [["10.0.0.1:1"], "10.0.0.1:1"],
    [["zk1", "zk2:2182", "zk3"], "zk1:2181,zk2:2182,zk3:2181"],
    [["10.0.0.1:2181", "10.0.0.2:2181", "10.0.0.3:2181"], "10.0.0.1:2181,10.0.0.2:2181,10.0.0.3:2181"]
  ])("%j → %s", (hosts, expected) => {
    expect(connectionString(hosts)).toBe(expected)
  })

  it("keeps the order of the hosts", () => {
    const hosts = ["c", "a", "b"]
    expect(connectionString(hosts).split(",")).toEqual(["c:2181", "a:2181", "b:2181"])
  })

  // What node-zookeeper-client (the client ZooKeeper.ts hands the string to) makes of it.
  const require = createRequire(import.meta.url)
  const Parser = require("node-zookeeper-client/lib/ConnectionStringParser.js") as new (s: string) => {
    getServers(): Array<{ host: string; port: number | string }>
  }
  const servers = (hosts: ReadonlyArray<string>) =>
    new Parser(connectionString(hosts))
      .getServers()
      .map((s) => `${s.host}|${Number(s.port)}`)
      .sort()

  it("gives the ZooKeeper client every host with its port", () => {
    expect(servers(["zk1", "zk2:2182", "10.0.0.3"])).toEqual(["10.0.0.3|2181", "zk1|2181", "zk2|2182"])
  })

  // node-zookeeper-client splits every server on ":": IPv6 literals are rejected by the config
  // (test/Config.test.ts) rather than handed to it.
  it("would misread an IPv6 literal, which is why the config refuses them", () => {
    expect(servers(["[::1]:2182"])).not.toEqual(["::1|2182"])
  })
})
