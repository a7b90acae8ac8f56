/**
 * The Sentinel events between two discovery views, in the order Sentinel publishes them:
 * `+sdown`/`+odown` as the master is lost, `+switch-master` once it is replaced, then one
 * `+slave` per replica; `±sdown` as replicas fail and recover; `+sentinel` as dictators with an
 * endpoint join. Channel = event name, payload = Sentinel's text. No I/O.
 */
import { type Address, type DiscoveryView, formatEndpoint, type MemberInfo, replicaDown, replicas, runId, sentinels } from "./Records.js"

export interface SentinelEvent {
  readonly channel: string
  readonly payload: string
}

const sameAddress = (a: Address, b: Address) => a.host === b.host && a.port === b.port

/** `master <name> <ip> <port>` */
const masterDetail = (service: string, m: Address) => `master ${service} ${m.host} ${m.port}`

/** `<type> <name> <ip> <port> @ <master-name> <master-ip> <master-port>` */
const instanceDetail = (type: string, name: string, a: Address, service: string, master: Address) =>
  `${type} ${name} ${a.host} ${a.port} @ ${service} ${master.host} ${master.port}`

const slaveDetail = (m: MemberInfo, service: string, master: Address) =>
  instanceDetail("slave", formatEndpoint(m), m, service, master)

export const diff = (prev: DiscoveryView | null, next: DiscoveryView): ReadonlyArray<SentinelEvent> => {
  if (prev === null || next.master === null) return []
  const out: Array<SentinelEvent> = []
  const service = next.service
  const master = next.master
  const switched = prev.master !== null && !sameAddress(prev.master, master)

  if (switched && prev.master !== null) {
    // The old master's loss, if not announced yet, then the switch.
    if (!prev.masterSdown) out.push({ channel: "+sdown", payload: masterDetail(service, prev.master) })
    out.push({
      channel: "+switch-master",
      payload: `${service} ${prev.master.host} ${prev.master.port} ${master.host} ${master.port}`
    })
    for (const r of replicas(next)) {
      if (r.present) out.push({ channel: "+slave", payload: slaveDetail(r, service, master) })
    }
  } else {
    const known = prev.master !== null
    if (known && !prev.masterSdown && next.masterSdown) out.push({ channel: "+sdown", payload: masterDetail(service, master) })
    if (known && !prev.masterOdown && next.masterOdown) {
      out.push({ channel: "+odown", payload: `${masterDetail(service, master)} #quorum ${next.votes}/${next.quorum}` })
    }
    if (known && prev.masterOdown && !next.masterOdown) out.push({ channel: "-odown", payload: masterDetail(service, master) })
    if (known && prev.masterSdown && !next.masterSdown) out.push({ channel: "-sdown", payload: masterDetail(service, master) })
    const before = new Set(replicas(prev).filter((r) => r.present).map((r) => r.name))
    for (const r of replicas(next)) {
      if (r.present && !before.has(r.name)) out.push({ channel: "+slave", payload: slaveDetail(r, service, master) })
    }
  }

  const wasDown = new Map(replicas(prev).map((r) => [r.name, replicaDown(r)] as const))
  for (const r of replicas(next)) {
    const was = wasDown.get(r.name)
    const now = replicaDown(r)
    // A replica seen for the first time is announced by +slave; +sdown only if it is down.
    if ((was === undefined && now) || (was === false && now)) {
      out.push({ channel: "+sdown", payload: slaveDetail(r, service, master) })
    } else if (was === true && !now) {
      out.push({ channel: "-sdown", payload: slaveDetail(r, service, master) })
    }
  }

  const knownSentinels = new Set(sentinels(prev).map((s) => `${s.name} ${formatEndpoint(s.sentinel)}`))
  for (const s of sentinels(next)) {
    if (!knownSentinels.has(`${s.name} ${formatEndpoint(s.sentinel)}`)) {
      out.push({
        channel: "+sentinel",
        payload: instanceDetail("sentinel", runId(service, `${s.name}/sentinel`), s.sentinel, service, master)
      })
    }
  }
  return out
}
