/**
 * The node's lifecycle as one value: taking part (`enabled`), out of the election (`disabled`),
 * handing the master role over (`handing-over`, then `disabled`), or shutting down (`stopping`,
 * for good). Only the node's lifecycle operations (Node.ts) change it; everyone else reads it.
 */
import { Context, Effect, Layer, Stream, SubscriptionRef } from "effect"

export type ModeValue = "enabled" | "disabled" | "handing-over" | "stopping"

export interface ModeService {
  readonly get: Effect.Effect<ModeValue>
  readonly changes: Stream.Stream<ModeValue>
  readonly set: (mode: ModeValue) => Effect.Effect<void>
}

export class Mode extends Context.Tag("dictator/Mode")<Mode, ModeService>() {
  static readonly layer = Layer.effect(
    Mode,
    Effect.map(SubscriptionRef.make<ModeValue>("enabled"), (ref) => ({
      get: SubscriptionRef.get(ref),
      changes: ref.changes,
      // `stopping` is final: nothing takes the node back into the election after shutdown began.
      set: (mode) => SubscriptionRef.update(ref, (current) => (current === "stopping" ? current : mode))
    }))
  )
}

/** The node runs its controller (and may act on the master znode) only in these modes. */
export const controls = (m: ModeValue): boolean => m === "enabled" || m === "disabled"
