import { Cause, Effect, Fiber, Schedule } from "effect"

/**
 * Forks a background loop in the current scope that never dies silently: a failure or defect is
 * logged with its cause and the loop starts again a second later; a loop that ends is started
 * again too. Interruption (the scope closing) stops it.
 */
export const supervised =
  (name: string) =>
  <A, E, R>(loop: Effect.Effect<A, E, R>) =>
    loop.pipe(
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.logError(`loop ${name} stopped; restarting`, cause)
      ),
      Effect.repeat(Schedule.spaced("1 second")),
      Effect.annotateLogs({ loop: name }),
      Effect.interruptible,
      Effect.forkScoped
    )

/**
 * Runs `effect` in a fiber of its own, interruptible: finalizers run uninterruptibly (and their
 * fiber is being interrupted), so a bounded step of a shutdown needs this for its time bound to
 * hold.
 */
export const inOwnFiber = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.flatMap(Effect.forkDaemon(Effect.interruptible(effect)), Fiber.join)
