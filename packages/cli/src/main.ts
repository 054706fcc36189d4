/**
 * The `tinyfusion` command tree, and how a run of it ends: an exit code,
 * and a failure said in one line.
 */
import { Cause, Console, Effect, Layer } from "effect"
import { CliError, CliOutput, Command } from "effect/cli"
import { Methods } from "@tinyfusion/experiments"
import { bench } from "./commands/bench.ts"
import { checkpoint } from "./commands/checkpoint.ts"
import { data } from "./commands/data.ts"
import { doctor } from "./commands/doctor.ts"
import { evaluate } from "./commands/eval.ts"
import { finetune } from "./commands/finetune.ts"
import { pretrain } from "./commands/pretrain.ts"
import { prune } from "./commands/prune.ts"
import { repro } from "./commands/repro.ts"
import { sample } from "./commands/sample.ts"
import { store } from "./commands/store.ts"
import { throughput } from "./commands/throughput.ts"
import { worker } from "./commands/worker.ts"
import * as GlobalFlags from "./GlobalFlags.ts"

export const tinyfusion = Command.make("tinyfusion").pipe(
  Command.withDescription("TinyFusion: learnable depth pruning of diffusion transformers, reproduced"),
  Command.withSubcommands([repro, doctor, bench, store, checkpoint, data, pretrain, prune, finetune, sample, evaluate, throughput, worker]),
  // Every command logs as --log-format says, may use the --store store, and knows the methods added in experiments/.
  Command.provide(Layer.mergeAll(GlobalFlags.logging, GlobalFlags.store, Methods.layer)),
  Command.withGlobalFlags(GlobalFlags.all)
)

/** Exit codes of `main`. */
export const exitCodes = { done: 0, failed: 1, refused: 2, interrupted: 130 } as const

/**
 * Runs `tinyfusion …args` to its exit code: `done`; `failed`, the failure
 * printed as one `error: …` line on stderr (with `--log-level debug`, `trace`
 * or `all` its full cause follows, traces included); `refused` when the
 * command line itself is wrong (an unknown flag, a value out of range): the
 * command's help on stdout, one `error: …` line per problem on stderr (a
 * flag given twice is refused too: the parser would keep one value unsaid).
 */
export const main = (args: ReadonlyArray<string>) =>
  Effect.suspend(() => {
    const twice = givenTwice(args)
    return twice === undefined
      ? Command.runWith(tinyfusion, { version: "0.1.0" })(dashedValues(args)).pipe(
        Effect.as<number>(exitCodes.done),
        Effect.catchCause((cause) => report(cause, wantsTrace(args)))
      )
      : Effect.as(Console.error(errorLine({ message: `${twice} is given more than once; give it once` })), exitCodes.refused)
  }).pipe(
    Effect.provide(CliOutput.layer({ ...CliOutput.defaultFormatter(), formatError: errorLine, formatErrors: (errors) => errors.map(errorLine).join("\n") }))
  )

/** A flag given twice (the parser would keep one value and drop the other unsaid). */
const givenTwice = (args: ReadonlyArray<string>): string | undefined => {
  const seen = new Set<string>()
  for (const arg of args) {
    if (arg === "--") return undefined
    const name = /^(--[a-z][\w-]*)(=|$)/.exec(arg)?.[1]
    if (name === undefined) continue
    if (seen.has(name)) return name
    seen.add(name)
  }
  return undefined
}

const errorLine = (error: { readonly message: string }) => `error: ${oneLine(error.message)}`

const oneLine = (text: string) => text.trim().replace(/\s*\n\s*/g, " ")

const report = (cause: Cause.Cause<unknown>, trace: boolean) =>
  Effect.gen(function*() {
    if (Cause.hasInterruptsOnly(cause)) return exitCodes.interrupted
    const error = Cause.squash(cause)
    // The CLI has printed its help and the problems already.
    if (CliError.isCliError(error)) return exitCodes.refused
    yield* Console.error(errorLine({ message: describe(error, !Cause.hasFails(cause)) }))
    if (trace) yield* Console.error(Cause.pretty(cause))
    return exitCodes.failed
  })

/** What went wrong in words: a typed error's message; a defect (a bug) says so. */
const describe = (error: unknown, defect: boolean): string => {
  const text = error instanceof Error
    ? error.message === "" ? (error as { readonly _tag?: string })._tag ?? error.name : error.message
    : String(error)
  return defect
    ? `internal error (${error instanceof Error ? error.name : "defect"}: ${text}); --log-level debug shows where`
    : text
}

const traceLevels = new Set(["debug", "trace", "all"])

/** `--log-level debug|trace|all`: the failure's cause is printed whole. */
const wantsTrace = (args: ReadonlyArray<string>) =>
  args.some((a, i) => traceLevels.has(a.startsWith("--log-level=") ? a.slice("--log-level=".length) : args[i - 1] === "--log-level" ? a : ""))

/**
 * `--scheme -1:2` read as `--scheme=-1:2`: a value that starts with a dash
 * and a digit but is no plain number (those the parser takes as values)
 * would otherwise be read as the short flags -1, -: and -2.
 */
const dashedValues = (args: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  for (const arg of args) {
    const previous = out.at(-1)
    if (/^-\d/.test(arg) && previous !== undefined && /^--[a-z][\w-]*$/.test(previous)) out[out.length - 1] = `${previous}=${arg}`
    else out.push(arg)
  }
  return out
}
