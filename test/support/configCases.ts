/** Decoding a config with a few keys over the minimal one, for the config tables. */
import { Either } from "effect"
import { type DictatorConfigData, parseConfig, type SecretSources } from "../../src/Config.js"

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

/** Secret files and environment for the config resolvers, in memory; a missing file is ENOENT. */
export const sources = (files: Record<string, string>, env: Record<string, string> = {}): SecretSources => ({
  env,
  readFile: (p) => {
    const text = files[p]
    if (text === undefined) throw Object.assign(new Error(`ENOENT: no such file or directory, open '${p}'`), { code: "ENOENT" })
    return text
  }
})
