/**
 * The logger layer: logfmt (default) or JSON lines on stdout, at the configured level.
 *
 * Effect's own loggers print the fiber id (`fiber=#34`), which means nothing to an operator (the
 * `loop` annotation names the loop), and its JSON logger always writes `annotations` and `spans`,
 * empty or not. These write what an operator reads: time, level, message, the cause if any, then
 * the annotations (and spans) when there are some.
 */
import { Cause, HashMap, Inspectable, List, Logger, LogLevel, Layer } from "effect"
import type { LogLevelName } from "./Config.js"

export const toLogLevel = (name: LogLevelName): LogLevel.LogLevel =>
  ({
    DEBUG: LogLevel.Debug,
    INFO: LogLevel.Info,
    WARN: LogLevel.Warning,
    ERROR: LogLevel.Error,
    FATAL: LogLevel.Fatal
  })[name]

/** What a formatter needs of one log call (a subset of Logger.Options, easy to build in a test). */
export interface LogEntry {
  readonly date: Date
  readonly logLevel: LogLevel.LogLevel
  readonly message: unknown
  readonly cause: Cause.Cause<unknown>
  readonly annotations: HashMap.HashMap<string, unknown>
  readonly spans: List.List<{ readonly label: string; readonly startTime: number }>
}

const messages = (message: unknown): ReadonlyArray<unknown> => (Array.isArray(message) ? message : [message])

// Values with spaces, quotes or `=` are quoted as JSON strings, as Effect's logfmt logger does.
const textOnly = /^[^\s"=]*$/
const logfmtValue = (v: string) => (textOnly.test(v) ? v : JSON.stringify(v))
const logfmtLabel = (k: string) => k.replace(/[\s="]/g, "_")

export const formatLogfmt = (e: LogEntry): string => {
  const parts = [`timestamp=${e.date.toISOString()}`, `level=${e.logLevel.label}`]
  for (const m of messages(e.message)) parts.push(`message=${logfmtValue(Inspectable.toStringUnknown(m, 0))}`)
  if (!Cause.isEmpty(e.cause)) parts.push(`cause=${logfmtValue(Cause.pretty(e.cause, { renderErrorCause: true }))}`)
  for (const span of e.spans) parts.push(`${logfmtLabel(span.label)}=${e.date.getTime() - span.startTime}ms`)
  for (const [k, v] of e.annotations) parts.push(`${logfmtLabel(k)}=${logfmtValue(Inspectable.toStringUnknown(v, 0))}`)
  return parts.join(" ")
}

const jsonValue = (u: unknown): unknown => {
  if (typeof u === "bigint" || typeof u === "function" || typeof u === "symbol") return String(u)
  if (u instanceof Error && !("toJSON" in u)) return { ...u, name: u.name, message: u.message }
  return Inspectable.toJSON(u)
}

export const formatJson = (e: LogEntry): string => {
  const ms = messages(e.message)
  const out: Record<string, unknown> = {
    timestamp: e.date.toISOString(),
    logLevel: e.logLevel.label,
    message: ms.length === 1 ? jsonValue(ms[0]) : ms.map(jsonValue)
  }
  if (!Cause.isEmpty(e.cause)) out["cause"] = Cause.pretty(e.cause, { renderErrorCause: true })
  if (HashMap.size(e.annotations) > 0) {
    const annotations: Record<string, unknown> = {}
    for (const [k, v] of e.annotations) annotations[k] = jsonValue(v)
    out["annotations"] = annotations
  }
  if (List.isCons(e.spans)) {
    const spans: Record<string, number> = {}
    for (const span of e.spans) spans[span.label] = e.date.getTime() - span.startTime
    out["spans"] = spans
  }
  return Inspectable.stringifyCircular(out)
}

export const logger = (format: "logfmt" | "json"): Logger.Logger<unknown, string> =>
  Logger.make((options) => (format === "json" ? formatJson(options) : formatLogfmt(options)))

export const layer = (options: { readonly format: "logfmt" | "json"; readonly level: LogLevelName }): Layer.Layer<never> =>
  Layer.merge(
    Logger.replace(Logger.defaultLogger, Logger.withConsoleLog(logger(options.format))),
    Logger.minimumLogLevel(toLogLevel(options.level))
  )
