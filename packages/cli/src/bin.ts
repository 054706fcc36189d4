#!/usr/bin/env node
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Exit, Logger, Runtime } from "effect"
import { main } from "./main.ts"

// Logs go to stderr, stdout being for command output; main prints any failure itself and
// returns the exit code (an interrupt, Ctrl-C, ends as Node's runtime ends it: 130).
main(process.argv.slice(2)).pipe(
  Effect.provideService(Logger.LogToStderr, true),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    teardown: (exit, onExit) => (Exit.isSuccess(exit) && typeof exit.value === "number" ? onExit(exit.value) : Runtime.defaultTeardown(exit, onExit))
  })
)
