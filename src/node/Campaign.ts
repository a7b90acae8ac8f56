/**
 * Standing for election: the candidates as every member sees them (records from ZooKeeper,
 * offsets read fresh from each Redis), this node's rank, and the wait that lets a better
 * candidate act first. Winning (creating the master znode) is the controller's action.
 */
import { Context, Effect, Either, Layer, Option } from "effect"
import { announcedAddress, DictatorConfig } from "../Config.js"
import { Event } from "../domain/Controller.js"
import { type Candidate, candidacy, deposedMaster, quorumOf, rankCandidates } from "../domain/Election.js"
import type { MemberRecord } from "../domain/Records.js"
import { formatAddress, type RedisAddress, sameAddress } from "../Redis.js"
import type { ZkBadVersion, ZkFailure, ZkNoNode } from "../ZooKeeper.js"
import { LocalHealth } from "./LocalHealth.js"
import { Membership } from "./Membership.js"
import { Peers } from "./Peers.js"
import { RoleEvents } from "./RoleEvents.js"
import { Store } from "./Store.js"
import { supervised } from "./supervised.js"

/** How often the master looks at departed members' Redis servers, and for how long after they left. */
const ORPHAN_CHECK = "2 seconds"
const ORPHAN_WATCH_MS = 10 * 60 * 1000

export interface CampaignService {
  /** Ranks the candidates and waits this node's turn: the reason to stand, or none (not a candidate). */
  readonly contend: Effect.Effect<Option.Option<string>>
  /**
   * The previous master's Redis may outlive its dictator (killed, or stopped without handover):
   * nobody would ever demote it, and clients still connected to it could keep writing. When its
   * node is no longer a member, the new master turns it into its replica, as Sentinel would.
   */
  readonly demoteOrphan: (previous: { readonly name: string; readonly address: RedisAddress }) => Effect.Effect<void>
  /**
   * Wins the election if nobody has: creates the master znode, then REPLICAOF NO ONE; gives the
   * znode back when the promotion fails. Returns what happened, as the controller's events. Run
   * under the controller's permit.
   */
  readonly promote: (reason: string) => Effect.Effect<ReadonlyArray<Event>, ZkFailure | ZkNoNode | ZkBadVersion>
}

export class Campaign extends Context.Tag("dictator/Campaign")<Campaign, CampaignService>() {}

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  const store = yield* Store
  const peers = yield* Peers
  const local = yield* LocalHealth
  const membership = yield* Membership
  const scope = yield* Effect.scope
  const roles = yield* RoleEvents
  // The master record names the announced address: what clients and the other hosts reach.
  const self = { name: config.node.name, ...announcedAddress(config) }
  let lastNote = ""

  const candidateOf = (m: MemberRecord, deposed: string | null): Effect.Effect<Candidate> =>
    Effect.gen(function* () {
      const base = { name: m.name, priority: m.priority, healthy: m.healthy }
      // Voted down by the others: its own view of its Redis does not count (no flapping back).
      if (m.name === deposed) return { ...base, reachable: false, offset: 0, syncInProgress: false }
      if (m.name === self.name) {
        // Fresh, like the peers' offsets: the last health check may be a whole interval old.
        const h = yield* local.health.get
        const info = yield* Effect.option(local.connection.replication)
        return {
          ...base,
          healthy: h._tag === "Healthy" && Option.isSome(info),
          reachable: Option.isSome(info),
          offset: Option.match(info, { onNone: () => 0, onSome: (i) => i.offset }),
          syncInProgress: Option.match(info, { onNone: () => false, onSome: (i) => i.syncInProgress })
        }
      }
      const info = yield* peers.use(m, (conn) => Effect.either(conn.replication))
      return Either.match(info, {
        onLeft: () => ({ ...base, reachable: false, offset: 0, syncInProgress: false }),
        onRight: (i) => ({ ...base, reachable: true, offset: i.offset, syncInProgress: i.syncInProgress })
      })
    })

  const contend = Effect.gen(function* () {
    const view = new Map(yield* store.members.get)
    if (!view.has(self.name)) view.set(self.name, yield* membership.record)
    const prev = yield* store.lastMaster
    // A master that a majority found unreachable is no candidate (and asking it would only time out).
    const quorum = quorumOf(config.quorum, yield* store.largestMembership)
    const deposed = deposedMaster(view, prev === null ? null : { name: prev.record.name, epoch: prev.epoch }, quorum)
    const candidates = yield* Effect.forEach(view.values(), (m) => candidateOf(m, deposed), { concurrency: "unbounded" })
    // A graceful handover that ended the previous master's epoch named its successor.
    const handover = Option.filter(
      yield* store.handover.pipe(Effect.orElseSucceed(() => Option.none())),
      (h) => prev !== null && h.epoch === prev.epoch
    )
    const named = Option.match(handover, {
      onNone: () => null,
      onSome: (h) => ({ name: h.to, from: h.from, graceMs: config.handover_timeout_ms })
    })
    // The old master's last recorded offset: a candidate far behind it (or empty) would lose its data.
    const recorded = prev === null ? null : yield* store.lastMasterRecordOf(prev.record.name)
    const guard = recorded === null ? null : { recordedOffset: recorded.offset, recordedBy: recorded.name, maxLag: config.max_lag_on_failover }
    const me = candidacy(rankCandidates(candidates, prev?.record.name ?? null, guard), self.name, config.election_step_ms, named)
    if (me._tag === "Excluded") {
      const note = `not a candidate: ${me.why}`
      if (note !== lastNote) yield* Effect.logInfo(note)
      lastNote = note
      yield* Effect.sleep(`${config.check_interval_ms} millis`)
      return Option.none()
    }
    lastNote = ""
    if (me.waitMs > 0) {
      yield* Effect.logDebug(`candidate rank ${me.rank + 1} of ${me.of}: waiting ${me.waitMs} ms for ${me.best}`)
      yield* Effect.sleep(`${me.waitMs} millis`)
    }
    return Option.some(me.reason)
  })

  const demoteOrphan: CampaignService["demoteOrphan"] = (previous) =>
    Effect.gen(function* () {
      if ((yield* store.members.get).has(previous.name)) return
      yield* peers.use(previous.address, (conn) =>
        Effect.gen(function* () {
          const info = yield* conn.replication
          if (info.role !== "master") return
          yield* Effect.logWarning(
            `old master ${previous.name} (${formatAddress(previous.address)}) has no dictator any more: making its Redis a replica of this node`
          )
          yield* conn.replicaOf(self)
        })
      )
    }).pipe(
      Effect.catchAll((e) => Effect.logDebug(`old master ${previous.name} not demoted: ${e.message}`)),
      Effect.annotateLogs({ loop: "demote-orphan" })
    )

  const promote: CampaignService["promote"] = (reason) =>
    Effect.gen(function* () {
      const previous = yield* store.lastMaster
      const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
      if (!(yield* store.createMaster(self, { since: new Date(now).toISOString() }))) {
        yield* Effect.logDebug("another candidate created the master znode first; following it")
        return []
      }
      const view = yield* store.refreshMaster
      // The znode was just created by this session through the quorum: that is the proof every
      // loosening needs (invariant 9), so the Redis takes writes at once, alone until replicas
      // link (min-replicas-to-write 0; the controller raises it when they do).
      const result = yield* Effect.either(
        Effect.all([
          local.connection.replicaOf(null),
          local.connection.unpause,
          local.connection.configSet("min-replicas-max-lag", String(config.min_replicas_max_lag)),
          local.connection.configSet("min-replicas-to-write", "0")
        ])
      )
      if (Either.isLeft(result)) {
        yield* Effect.logError(`promotion failed (${result.left.message}): giving the master znode back`)
        if (view._tag === "Present") yield* store.removeMaster(view).pipe(Effect.ignore)
        return [Event.Elected(), Event.Released()]
      }
      yield* Effect.logInfo(`promoting: ${reason} (epoch ${view._tag === "Present" ? view.epoch : "?"})`)
      yield* roles.publish({
        role: "master",
        service: config.svc_name,
        node: self.name,
        master: self,
        epoch: view._tag === "Present" ? view.epoch : null,
        cause: "elected",
        at: now
      })
      yield* local.checkNow
      if (previous !== null && previous.record.name !== self.name) {
        yield* Effect.forkIn(demoteOrphan({ name: previous.record.name, address: previous.record }), scope)
      }
      return [Event.Elected(), Event.Promoted(), Event.MinReplicasApplied({ value: 0 })]
    })

  // The master's dictator keeps looking, for a while, at the Redis servers of members that left:
  // an old master whose Redis comes back without its dictator (restarted by systemd, say) says
  // role:master and would take writes from clients that still know it. Bounded in time, so a
  // departed member's address is not reconnected to forever.
  yield* supervised("demote-orphans")(
    Effect.forever(
      Effect.zipRight(
        Effect.sleep(ORPHAN_CHECK),
        Effect.gen(function* () {
          const view = yield* store.master.get
          const session = yield* store.session.get
          if (view === null || view._tag !== "Present" || view.owner !== session.sessionId || session.status !== "connected") return
          const members = [...(yield* store.members.get).values()]
          // Only old masters that left without a handover: one that handed over (SIGTERM,
          // /disable) left its Redis replicating, and a disabled node's Redis is the operator's.
          const oldMasters = (yield* store.departed(ORPHAN_WATCH_MS)).filter((m) => m.role === "master")
          if (oldMasters.length === 0) return
          const handedOver = Option.map(yield* store.handover.pipe(Effect.orElseSucceed(() => Option.none())), (h) => h.from)
          for (const m of oldMasters) {
            if (m.role !== "master" || Option.contains(handedOver, m.name)) continue
            if (sameAddress(m, self) || members.some((x) => sameAddress(x, m))) continue
            yield* demoteOrphan({ name: m.name, address: m })
          }
        })
      )
    )
  )

  return { contend, demoteOrphan, promote } satisfies CampaignService
})

export const layer = Layer.scoped(Campaign, make)
