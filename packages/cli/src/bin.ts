#!/usr/bin/env node
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Exit, Logger } from "effect"
import { exitCodes, main } from "./main.ts"

// Logs go to stderr, stdout being for command output; main prints any failure itself.
main(process.argv.slice(2)).pipe(
  Effect.provideService(Logger.LogToStderr, true),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({
    disableErrorReporting: true,
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : exitCodes.failed)
  })
)
