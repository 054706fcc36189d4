/**
 * Flags every `tinyfusion` command understands. Each is a setting that
 * commands read from their context.
 */
import { Effect, FileSystem, Layer, Logger, Option } from "effect"
import { Flag, GlobalFlag } from "effect/cli"
import { ArtifactStore, Progress, StoreError } from "@tinyfusion/core"
import { backendNames, Compute } from "@tinyfusion/tensor"

export const Backend = GlobalFlag.Setting("backend")({
  flag: Flag.Literals("backend", ["auto", ...backendNames]).pipe(
    Flag.withDescription("Compute backend: auto picks the best that initialises here"),
    Flag.withDefault("auto" as const)
  )
})

export const Store = GlobalFlag.Setting("store")({
  flag: Flag.String("store").pipe(
    Flag.withDescription("Artifact store directory"),
    Flag.withDefault("./runs")
  )
})

export const LogFormat = GlobalFlag.Setting("log-format")({
  flag: Flag.Literals("log-format", ["pretty", "json"]).pipe(
    Flag.withDescription("Log lines for people (pretty) or machines (json)"),
    Flag.withDefault("pretty" as const)
  )
})

export const all = [Backend, Store, LogFormat] as const

/** Provides the Compute layer chosen by --backend. */
export const withCompute = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const choice = yield* Backend
    return yield* Effect.provide(self, Compute.layer(choice))
  })

/**
 * The logger chosen by --log-format, writing to stderr so that stdout holds
 * only command output. With JSON logs, progress is reported as log lines.
 */
export const logging = Layer.unwrap(Effect.map(LogFormat, (format) =>
  Layer.mergeAll(
    // Logger.consoleJson would write to stdout whatever LogToStderr says.
    Logger.layer([format === "json" ? Logger.withConsoleError(Logger.formatJson) : Logger.consolePretty()]),
    Layer.succeed(Logger.LogToStderr, true),
    format === "json" ? Layer.succeed(Progress.Display, "lines") : Layer.empty
  )))

/**
 * The artifact store in the --store directory (created when first written);
 * a --store that names a file fails every command at once, not each read.
 */
export const store = Layer.unwrap(Effect.gen(function*() {
  const dir = yield* Store
  const fs = yield* FileSystem.FileSystem
  const info = yield* fs.stat(dir).pipe(Effect.option)
  if (Option.isSome(info) && info.value.type !== "Directory") {
    return yield* new StoreError({ operation: "open the store", path: dir, reason: "it is not a directory", transient: false })
  }
  return ArtifactStore.layer(dir)
}))
