/** Shared fixtures of the domain tables: znodes, INFO replication, Redis failures, the step's world. */
import { Either, Option } from "effect"
import type { Self, Settings } from "../../src/domain/Controller.js"
import type { CheckResult } from "../../src/domain/Health.js"
import type { PresentMaster } from "../../src/domain/Records.js"
import type { RedisFailure, ReplicationInfo } from "../../src/Redis.js"
import { RedisCommandError, RedisLoading, RedisUnavailable } from "../../src/Redis.js"
import type { SessionInfo, ZkNode, ZkStat } from "../../src/ZooKeeper.js"
// Fixtures

export const enc = (s: string) => new TextEncoder().encode(s)

export const stat = (over: Partial<ZkStat> = {}): ZkStat => ({
  version: 0,
  czxid: "4294967300",
  mzxid: "4294967300",
  ephemeralOwner: "1000a2b3c4d0001",
  ...over
})

export const znode = (data: string, over: Partial<ZkStat> = {}): Option.Option<ZkNode> =>
  Option.some({ data: enc(data), stat: stat(over) })

export const masterInfo = (over: Partial<ReplicationInfo> = {}): ReplicationInfo => ({
  role: "master",
  master: null,
  linkUp: true,
  linkDownSinceSeconds: null,
  syncInProgress: false,
  offset: 1000,
  replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  replicas: [],
  ...over
})

export const replicaInfo = (host: string, port: number, over: Partial<ReplicationInfo> = {}): ReplicationInfo => ({
  role: "replica",
  master: { host, port },
  linkUp: true,
  linkDownSinceSeconds: null,
  syncInProgress: false,
  offset: 900,
  replid: "f791eede4d0a50a70c010c94b1a0ac6c9fc5994e",
  replicas: [],
  ...over
})

export const refused = new RedisUnavailable({ address: "127.0.0.1:6379", reason: "refused", detail: "ECONNREFUSED" })
export const closed = new RedisUnavailable({ address: "127.0.0.1:6379", reason: "closed", detail: "Connection is closed" })
export const timeout = new RedisUnavailable({ address: "127.0.0.1:6379", reason: "timeout", detail: "PING got no answer" })
export const loading = new RedisLoading({ address: "127.0.0.1:6379" })
export const commandError = new RedisCommandError({ address: "127.0.0.1:6379", command: "INFO replication", detail: "NOPERM" })

export const ok = (info: ReplicationInfo = masterInfo()): CheckResult => Either.right(info)
export const fail = (e: RedisFailure): CheckResult => Either.left(e)


// The step tables' world (Step.test.ts, Failsafe.test.ts): this node n1 and another, n2.
export const ME = "aaa1"
export const THEM = "bbb2"
export const self: Self = { name: "n1", host: "10.0.0.1", port: 6379, priority: 100 }
export const settings: Settings = { fenceAfterMs: 1000, minReplicasToWrite: 1, minReplicasMaxLag: 2 }
export const connected: SessionInfo = { status: "connected", sessionId: ME, generation: 1, since: 0 }
export const disconnected = (since: number): SessionInfo => ({ ...connected, status: "disconnected", since })
export const present = (name: string, host: string, owner: string, epoch = "500"): PresentMaster => ({
  _tag: "Present",
  record: { name, host, port: 6379 },
  version: 0,
  epoch,
  owner,
  epochVersion: 1
})
export const mine = present("n1", "10.0.0.1", ME)
export const theirs = present("n2", "10.0.0.2", THEM)
