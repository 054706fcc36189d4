#!/usr/bin/env node
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect, Logger, Runtime } from "effect"
import { run } from "./main.ts"

// Logs go to stderr, stdout being for command output. runMain would report a
// failure on stdout (its logger sits outside what we provide), so the failure
// is reported here, skipping what the CLI has already shown (a help screen).
run.pipe(
  Effect.tapCause((cause) =>
    Cause.hasInterruptsOnly(cause) || !Runtime.getErrorReported(Cause.squash(cause)) ? Effect.void : Effect.logError(cause)
  ),
  Effect.provideService(Logger.LogToStderr, true),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
