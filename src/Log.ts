/**
 * The logger layer: logfmt (default) or JSON lines on stdout, at the configured level.
 */
import { Layer, Logger, LogLevel } from "effect"
import type { LogLevelName } from "./Config.js"

export const toLogLevel = (name: LogLevelName): LogLevel.LogLevel =>
  ({
    DEBUG: LogLevel.Debug,
    INFO: LogLevel.Info,
    WARN: LogLevel.Warning,
    ERROR: LogLevel.Error,
    FATAL: LogLevel.Fatal
  })[name]

export const layer = (options: { readonly format: "logfmt" | "json"; readonly level: LogLevelName }): Layer.Layer<never> =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      Logger.withConsoleLog(options.format === "json" ? Logger.jsonLogger : Logger.logfmtLogger)
    ),
    Logger.minimumLogLevel(toLogLevel(options.level))
  )
