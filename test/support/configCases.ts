/** Decoding a config with a few keys over the minimal one, for the config tables. */
import { Either } from "effect"
import { type DictatorConfigData, parseConfig } from "../../src/Config.js"

export const FILE = "/etc/dictator/dictator.conf"

export const decode = (extra: Record<string, unknown>) => parseConfig(FILE, JSON.stringify({ svc_name: "s", ...extra }))

/** The decoded config; throws with the message when it is refused. */
export const ok = (extra: Record<string, unknown>): DictatorConfigData => {
  const r = decode(extra)
  if (Either.isLeft(r)) throw new Error(`expected a valid config, got: ${r.left.message}`)
  return r.right.config
}

/** The refusal's message; throws when the config is accepted. */
export const err = (extra: Record<string, unknown>): string => {
  const r = decode(extra)
  if (Either.isRight(r)) throw new Error(`expected a ConfigError, got: ${JSON.stringify(r.right.config)}`)
  return r.left.message
}
