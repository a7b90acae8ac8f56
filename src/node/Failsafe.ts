/**
 * Failsafe mode, the master's side (issue 13): while this node holds the master znode and has
 * lost ZooKeeper, it asks every other member of the last known membership, over their dictators'
 * HTTP API (`POST /failsafe`), whether it may keep taking writes. Only a yes from every one of
 * them within the round's deadline grants writes for `grantMs` from the moment the round was sent;
 * anything else (a no, no answer, no address, no other member) revokes the grant at once. The
 * controller turns the grant into its plan (domain/Controller.decide); the members' side is
 * Controller.answerFailsafe behind Http.ts's route.
 */
import { Context, Data, Effect, Either, Layer, Option, Redacted, Schema } from "effect"
import { DictatorConfig } from "../Config.js"
import { Event } from "../domain/Controller.js"
import { FailsafeAnswer, type FailsafeRequest, failsafeTimings } from "../domain/Failsafe.js"
import type { MemberRecord } from "../domain/Records.js"
import { Controller } from "./Controller.js"
import { Store } from "./Store.js"
import { supervised } from "./supervised.js"

export class FailsafeAskError extends Data.TaggedError("FailsafeAskError")<{ readonly member: string; readonly reason: string }> {
  override get message() {
    return `${this.member}: ${this.reason}`
  }
}

/** How a master reaches another member's dictator: HTTP in production, the nodes' own services in tests. */
export interface FailsafeTransportService {
  readonly ask: (member: MemberRecord, request: FailsafeRequest, timeoutMs: number) => Effect.Effect<FailsafeAnswer, FailsafeAskError>
}

export class FailsafeTransport extends Context.Tag("dictator/FailsafeTransport")<FailsafeTransport, FailsafeTransportService>() {}

/** The Bearer token sent with every request to another dictator's mutating endpoints, when one is configured. */
export class HttpToken extends Context.Tag("dictator/HttpToken")<HttpToken, Redacted.Redacted<string>>() {}

const decodeAnswer = Schema.decodeUnknownEither(FailsafeAnswer)

/** `POST <member.http>/failsafe` with the request as JSON, bounded by `timeoutMs`. */
export const httpTransport = (token: Option.Option<Redacted.Redacted<string>>): FailsafeTransportService => ({
  ask: (member, request, timeoutMs) =>
    Effect.gen(function* () {
      const fail = (reason: string) => new FailsafeAskError({ member: member.name, reason })
      if (member.http === undefined || member.http === null) {
        return yield* Effect.fail(fail("its member record gives no HTTP address (a dictator older than failsafe mode?)"))
      }
      // A URL since http_tls; the plain host:port of the first records meant http.
      const url = `${member.http.includes("://") ? member.http : `http://${member.http}`}/failsafe`
      const headers: Record<string, string> = { "content-type": "application/json" }
      if (Option.isSome(token)) headers["authorization"] = `Bearer ${Redacted.value(token.value)}`
      const response = yield* Effect.tryPromise({
        try: async (signal) => {
          const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(request), signal })
          return { status: r.status, text: (await r.text()).slice(0, 4096) }
        },
        catch: (e) => fail(`${url}: ${e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)}`)
      }).pipe(Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => fail(`${url}: no answer within ${timeoutMs} ms`) }))
      let json: unknown
      try {
        json = JSON.parse(response.text)
      } catch {
        return yield* Effect.fail(fail(`${url} answered ${response.status}, not JSON`))
      }
      const answer = decodeAnswer(json)
      if (Either.isLeft(answer)) return yield* Effect.fail(fail(`${url} answered ${response.status} without a failsafe answer`))
      return answer.right
    })
})

export interface FailsafeService {
  /** `failsafe` of the config: whether this node asks the members when it loses ZooKeeper. */
  readonly enabled: boolean
}

export class Failsafe extends Context.Tag("dictator/Failsafe")<Failsafe, FailsafeService>() {}

type Round = { readonly _tag: "Granted"; readonly by: ReadonlyArray<string> } | { readonly _tag: "Refused"; readonly why: string }

export const make = Effect.gen(function* () {
  const { config } = yield* DictatorConfig
  if (!config.failsafe) return { enabled: false } satisfies FailsafeService
  const store = yield* Store
  const controller = yield* Controller
  const token = yield* Effect.serviceOption(HttpToken)
  const transport = Option.getOrElse(yield* Effect.serviceOption(FailsafeTransport), () => httpTransport(token))
  const now = Effect.clockWith((c) => c.currentTimeMillis)
  /** The last round's outcome in words: logged when it changes, not every round. */
  let said = ""
  const say = (line: string, warn: boolean) =>
    Effect.suspend(() => {
      if (line === said) return Effect.void
      said = line
      return warn ? Effect.logWarning(line) : Effect.logInfo(line)
    })

  const round = (epoch: string, master: string, others: ReadonlyArray<MemberRecord>, askWithinMs: number): Effect.Effect<Round> =>
    Effect.gen(function* () {
      if (others.length === 0) return { _tag: "Refused", why: "no other member is known: nobody can vouch that no election is possible" }
      const request: FailsafeRequest = { service: config.svc_name, master, epoch }
      const answers = yield* Effect.forEach(
        others,
        (m) =>
          transport.ask(m, request, askWithinMs).pipe(
            Effect.map((a) => (a.answer === "yes" ? null : `${m.name} answered no (${a.reason})`)),
            Effect.catchAll((e) => Effect.succeed(`no answer from ${e.message}`))
          ),
        { concurrency: "unbounded" }
      )
      const refusals = answers.filter((a): a is string => a !== null)
      return refusals.length === 0 ? { _tag: "Granted", by: others.map((m) => m.name) } : { _tag: "Refused", why: refusals.join("; ") }
    })

  const once = Effect.gen(function* () {
    const session = yield* store.session.get
    const timings = failsafeTimings(config.fence_after_ms, session.timeoutMs ?? config.zk_session_timeout_ms, config.check_interval_ms + config.check_timeout_ms)
    const s = yield* controller.state.get
    const view = yield* store.master.get
    const mine = view !== null && view._tag === "Present" && view.owner === session.sessionId ? view : null
    if (!s.owned || session.status !== "disconnected" || mine === null) {
      said = ""
      return yield* Effect.sleep(`${config.check_interval_ms} millis`)
    }
    const sentAt = yield* now
    const others = [...(yield* store.members.get).values()].filter((m) => m.name !== config.node.name)
    const outcome = yield* round(mine.epoch, config.node.name, others, timings.askWithinMs)
    if (outcome._tag === "Granted") {
      yield* controller.feed(Event.FailsafeGranted({ until: sentAt + timings.grantMs, epoch: mine.epoch }))
      yield* say(`failsafe: ZooKeeper is away; every other member (${outcome.by.join(", ")}) cannot reach it either and follows this master: writes go on`, true)
    } else {
      yield* controller.feed(Event.FailsafeRevoked())
      yield* say(`failsafe: ZooKeeper is away and not every member vouches for this master (${outcome.why}): fencing as without failsafe`, true)
    }
    yield* controller.wake
    const wait = sentAt + timings.renewEveryMs - (yield* now)
    if (wait > 0) yield* Effect.sleep(`${wait} millis`)
  })

  yield* supervised("failsafe")(Effect.forever(once))
  return { enabled: true } satisfies FailsafeService
})

export const layer = Layer.scoped(Failsafe, make)
