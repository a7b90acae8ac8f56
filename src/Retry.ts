import { Duration, Schedule } from "effect"

/**
 * Backoff for reaching a server that went away: exponential from 100 ms, jittered, capped at
 * `cap` per wait, forever. Each retry site logs its own attempts.
 */
export const backoff = (cap: Duration.DurationInput = "5 seconds") =>
  Schedule.exponential("100 millis").pipe(
    Schedule.jittered,
    Schedule.union(Schedule.spaced(cap)),
    Schedule.asVoid
  )

export const reconnectSchedule = backoff()
