/**
 * Command line: the original's `--config=PATH`, plus `--log-level`, `--version`, `--help`.
 */
import { Either } from "effect"
import { LogLevelName } from "./Config.js"
import { Schema } from "effect"

export const DEFAULT_CONFIG = "/etc/dictator/dictator.conf"

export const usage = `Usage: dictator [--config=PATH] [--log-level=LEVEL]
       dictator list|switchover|pause|resume|status [OPTIONS] (each with --help)

Runs the Redis Dictator daemon next to one Redis server. The subcommands operate a cluster:
  list [SERVICE...]            members, roles, health, offsets and lag of each service
  switchover SERVICE           planned switchover to a caught-up replica (--to, --at, --force)
  pause SERVICE / resume SERVICE   maintenance mode: no automatic failover while paused
  status                       the local daemon's status (its HTTP API)

Options:
  --config=PATH       configuration file (default ${DEFAULT_CONFIG})
  --log-level=LEVEL   DEBUG, INFO, WARN, ERROR or FATAL; overrides log_level of the file
  --version           print the version and exit
  --help              print this help and exit
`

/** The operator's subcommands (Operator.ts, parsed by @effect/cli); anything else is the daemon's. */
export const SUBCOMMANDS = ["list", "switchover", "pause", "resume", "status"] as const

export const isOperatorCommand = (argv: ReadonlyArray<string>): boolean =>
  argv.length > 0 && (SUBCOMMANDS as ReadonlyArray<string>).includes(argv[0]!)

export type Command =
  | { readonly _tag: "Run"; readonly config: string; readonly logLevel: LogLevelName | null }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }

/** Accepts `--flag=value`, `--flag value` and the single-dash forms Go's flag package took. */
export const parseArgs = (argv: ReadonlyArray<string>): Either.Either<Command, string> => {
  let config = DEFAULT_CONFIG
  let logLevel: LogLevelName | null = null
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const m = /^--?([a-z_-]+)(?:=(.*))?$/.exec(arg)
    if (!m) return Either.left(`unexpected argument "${arg}"; see --help`)
    const [, flag, inline] = m
    const value = (): Either.Either<string, string> => {
      if (inline !== undefined) return Either.right(inline)
      const next = argv[i + 1]
      if (next === undefined || next.startsWith("-")) return Either.left(`--${flag} needs a value, e.g. --${flag}=...`)
      i++
      return Either.right(next)
    }
    switch (flag) {
      case "help":
      case "h":
        return Either.right({ _tag: "Help" })
      case "version":
        return Either.right({ _tag: "Version" })
      case "config": {
        const v = value()
        if (Either.isLeft(v)) return Either.left(v.left)
        if (v.right === "") return Either.left("--config needs a file path, e.g. --config=/etc/dictator/dictator.conf")
        config = v.right
        break
      }
      case "log-level":
      case "log_level": {
        const v = value()
        if (Either.isLeft(v)) return Either.left(v.left)
        const level = Schema.decodeUnknownEither(LogLevelName)(v.right)
        if (Either.isLeft(level)) return Either.left(`--log-level "${v.right}" must be one of DEBUG, INFO, WARN, ERROR, FATAL`)
        logLevel = level.right
        break
      }
      default:
        return Either.left(`unknown option "${arg}"; see --help`)
    }
  }
  return Either.right({ _tag: "Run", config, logLevel })
}
