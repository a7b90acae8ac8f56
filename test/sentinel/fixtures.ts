/** Node statuses for the discovery tests: three members n1..n3 on Redis ports 7001..7003. */
import type { StatusInput, StatusMember } from "../../src/sentinel/Records.js"

export const member = (i: number, over: Partial<StatusMember> = {}): StatusMember => ({
  name: `n${i}`,
  host: "127.0.0.1",
  port: 7000 + i,
  priority: 100,
  healthy: true,
  role: "replica",
  offset: 1000,
  link_up: true,
  master_down: null,
  sentinel: `127.0.0.1:${26000 + i}`,
  ...over
})

/** n`master` is master with epoch `epoch`; the others replicate. `self` is the local node. */
export const status = (opts: {
  readonly self?: number
  readonly master?: number | null
  readonly epoch?: string
  readonly members?: ReadonlyArray<StatusMember>
  readonly session?: { readonly status: string; readonly since: number }
}): StatusInput => {
  const master = opts.master === undefined ? 1 : opts.master
  const members =
    opts.members ?? [1, 2, 3].map((i) => member(i, i === master ? { role: "master", link_up: true } : {}))
  return {
    name: `n${opts.self ?? 1}`,
    service: "svc",
    session: opts.session ?? { status: "connected", since: 0 },
    master:
      master === null
        ? { _tag: "Absent" }
        : { _tag: "Present", record: { name: `n${master}`, host: "127.0.0.1", port: 7000 + master }, epoch: opts.epoch ?? "4294967296" },
    members
  }
}
