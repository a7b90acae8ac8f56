/**
 * What the demo prints, from the dictators' /status JSON: pure, so a unit test can pin it down.
 */

/** One dictator as the demo sees it: its /status JSON, or why there is none. */
export type NodeView =
  | { readonly name: string; readonly state: "status"; readonly status: unknown }
  | { readonly name: string; readonly state: "stopped" | "frozen" | "no answer" }

const field = (value: unknown, key: string): unknown =>
  typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined

const str = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined)

interface Elected {
  readonly name: string
  readonly host: string
  readonly port: string
  readonly epoch: string
}

const electedOf = (status: unknown): Elected | undefined => {
  const m = field(status, "master")
  if (field(m, "state") !== "elected") return undefined
  const name = str(field(m, "name"))
  const host = str(field(m, "host"))
  const port = field(m, "port")
  const epoch = field(m, "epoch")
  if (name === undefined || host === undefined || port === undefined) return undefined
  return { name, host, port: String(port), epoch: String(epoch) }
}

/** Why a node is not a replica, in words: its role, and its Redis's trouble if any. */
const why = (status: unknown): string => {
  const role = str(field(status, "role")) ?? "?"
  const redis = field(status, "redis")
  const state = str(field(redis, "state"))
  if (state === "down" || state === "suspect") {
    const detail = str(field(redis, "detail"))
    return `${role}, Redis ${state}${detail ? `: ${detail}` : ""}`
  }
  if (state === "loading") return `${role}, Redis loading`
  return role
}

/**
 * The roles line: `master: redis1 127.0.0.1:7001 (epoch 12) · replicas: redis2, redis3`, then
 * every other node with why it is neither (`redis3 waiting, Redis down: connection refused`).
 * The master is the one most answering dictators name.
 */
export const rolesLine = (nodes: ReadonlyArray<NodeView>): string => {
  const answering = nodes.flatMap((n) => (n.state === "status" ? [{ name: n.name, status: n.status }] : []))
  const votes = new Map<string, { elected: Elected; count: number }>()
  for (const n of answering) {
    const e = electedOf(n.status)
    if (e === undefined) continue
    const key = `${e.name}@${e.epoch}`
    votes.set(key, { elected: e, count: (votes.get(key)?.count ?? 0) + 1 })
  }
  const best = [...votes.values()].sort((a, b) => b.count - a.count)[0]
  const parts: Array<string> = []
  parts.push(
    best === undefined
      ? "master: none"
      : `master: ${best.elected.name} ${best.elected.host}:${best.elected.port} (epoch ${best.elected.epoch})`
  )
  const replicas = answering.filter((n) => field(n.status, "role") === "replica").map((n) => n.name)
  parts.push(`replicas: ${replicas.length === 0 ? "none" : replicas.join(", ")}`)
  const others = nodes.flatMap((n) => {
    if (n.state !== "status") return [`${n.name} ${n.state}`]
    const role = field(n.status, "role")
    if (role === "replica") return []
    if (role === "master" && best !== undefined && best.elected.name === n.name) return []
    return [`${n.name} ${why(n.status)}`]
  })
  if (others.length > 0) parts.push(`other: ${others.join("; ")}`)
  return parts.join(" · ")
}

export const MENU = `Keys:
  k      kill -9 the master's Redis (a replica takes over)
  r      restart every Redis that is down
  f      freeze the master's host: SIGSTOP its Redis and its dictator (f again: SIGCONT)
  1 2 3  stop (SIGTERM: graceful handover) or start the dictator of redis1, redis2, redis3
  d      /disable the master's dictator (it hands over and leaves the election)
  e      /enable every disabled dictator
  s      print the roles now       ?  this menu       q  quit (Ctrl-C works too)`
