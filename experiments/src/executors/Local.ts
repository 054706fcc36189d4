/**
 * Compute processes on this machine: children forked from `child.ts`, each
 * with its own Compute layer on the shared store, running one job at a time
 * sent over IPC; of the jobs waiting, a free one takes the job of the
 * highest priority (`prioritised`). `layer` makes N of them the suite's
 * executor (one per core by default); the Postgres worker runs its jobs in
 * one, so that the
 * queue's heartbeat is never starved by a long synchronous computation.
 *
 * A child that dies in a job (killed, out of memory) is replaced and the
 * job sent again, up to `attempts` times: the stage resumes from its
 * checkpoints, its lock freed with the dead process. A child outlives no
 * parent: it exits when the IPC channel closes.
 */
import { Deferred, Effect, Exit, Layer, Queue, Schema, Scope } from "effect"
import { Progress } from "@tinyfusion/core"
import { fork } from "node:child_process"
import * as os from "node:os"
import type * as Presets from "../presets.ts"
import { Executor } from "./Executor.ts"
import { Job, JobFailed } from "./Job.ts"
import type * as View from "./View.ts"

/** What a child says: ready for a job, the progress of the job it runs, or how that job ended. */
export const ChildMessage = Schema.Union([
  Schema.TaggedStruct("Ready", {}),
  Schema.TaggedStruct("Progress", { key: Schema.String, figures: Progress.Figures }),
  Schema.TaggedStruct("Done", { key: Schema.String }),
  Schema.TaggedStruct("Failed", { key: Schema.String, stage: Schema.String, reason: Schema.String })
])
export type ChildMessage = typeof ChildMessage.Type

/** What a parent says: run this job. */
export const ParentMessage = Schema.TaggedStruct("Run", { job: Job })
export type ParentMessage = typeof ParentMessage.Type

export interface Options {
  readonly store: string
  /** The Compute backend the children use (what `--backend` names). */
  readonly backend: string
  /** The children's log lines: for people or as JSON (what `--log-format` names). */
  readonly logFormat: "pretty" | "json"
  /** A job is tried this many times when its process dies under it. */
  readonly attempts?: number
}

type Settled = Exclude<ChildMessage, { readonly _tag: "Ready" | "Progress" }>
type Outcome = { readonly _tag: "Settled"; readonly message: Settled } | { readonly _tag: "Exited"; readonly how: string }
type Report = (update: View.Update) => Effect.Effect<void>

interface Child {
  readonly name: string
  readonly run: (job: Job, report: Report) => Effect.Effect<Outcome>
}

const decodeChild = Schema.decodeUnknownSync(ChildMessage)

/** One compute process, ready for jobs; killed when the scope closes. */
const spawn = (name: string, options: Options): Effect.Effect<Child, never, Scope.Scope> =>
  Effect.gen(function*() {
    const ready = yield* Deferred.make<void, string>()
    let current: { readonly key: string; readonly outcome: Deferred.Deferred<Outcome>; readonly report: Report } | undefined
    let exited: string | undefined
    // Progress reaches the view from IPC callbacks, with this fiber's services (the logger of --log-format).
    const context = yield* Effect.context<never>()
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        fork(new URL("./child.ts", import.meta.url), [options.store, options.backend, options.logFormat, name], {
          stdio: ["ignore", "inherit", "inherit", "ipc"],
          execArgv: process.execArgv,
          // Structured clone: a loss of NaN in a progress report stays NaN (JSON would make it null).
          serialization: "advanced"
        })
      ),
      (c) => Effect.sync(() => void (c.exitCode === null && c.signalCode === null && c.kill("SIGTERM")))
    )
    child.on("message", (raw) => {
      const message = decodeChild(raw)
      if (message._tag === "Ready") Deferred.doneUnsafe(ready, Effect.void)
      else if (current === undefined || message.key !== current.key) return
      else if (message._tag === "Progress") Effect.runForkWith(context)(current.report({ _tag: "Progress", worker: name, figures: message.figures }))
      else Deferred.doneUnsafe(current.outcome, Effect.succeed({ _tag: "Settled", message }))
    })
    child.on("exit", (code, signal) => {
      exited = signal === null ? `exit code ${code}` : `signal ${signal}`
      Deferred.doneUnsafe(ready, Effect.fail(exited))
      if (current !== undefined) Deferred.doneUnsafe(current.outcome, Effect.succeed({ _tag: "Exited", how: exited }))
    })
    yield* Deferred.await(ready).pipe(Effect.catch((how) => Effect.die(new Error(`compute process ${name} ended before it was ready (${how})`))))
    return {
      name,
      run: (job, report) =>
        Effect.gen(function*() {
          if (exited !== undefined) return { _tag: "Exited", how: exited } as const
          const outcome = yield* Deferred.make<Outcome>()
          current = { key: job.key, outcome, report }
          yield* report({ _tag: "Started", worker: name })
          child.send({ _tag: "Run", job } satisfies typeof ParentMessage.Encoded)
          return yield* Deferred.await(outcome).pipe(Effect.ensuring(Effect.sync(() => void (current = undefined))))
        })
    } satisfies Child
  })

/**
 * Jobs run on `servers`, one at a time each: a free server takes the waiting
 * job of the highest priority, the earliest sent of equals. `serve` runs a
 * job and says which server takes the next one (a compute process is
 * replaced when it dies). Returns how to run a job; a job withdrawn
 * (interrupted) while waiting is dropped, one being served runs to its end.
 */
export const prioritised = Effect.fn("Local.prioritised")(function*<S, J, E>(
  servers: ReadonlyArray<S>,
  serve: (server: S, job: J) => Effect.Effect<{ readonly next: S; readonly exit: Exit.Exit<void, E> }>
) {
  const scope = yield* Effect.scope
  const waiting: Array<{ readonly job: J; readonly priority: number; readonly ended: Deferred.Deferred<void, E> }> = []
  // One token per job sent; a job withdrawn before it is taken leaves a token that finds nothing.
  const sent = yield* Queue.unbounded<void>()
  const take = () => {
    let best = -1
    waiting.forEach((w, i) => {
      if (best < 0 || w.priority > waiting[best]!.priority) best = i
    })
    return best < 0 ? undefined : waiting.splice(best, 1)[0]
  }
  const loop = (first: S) =>
    Effect.gen(function*() {
      let server = first
      while (true) {
        yield* Queue.take(sent)
        const taken = take()
        if (taken === undefined) continue
        const { next, exit } = yield* serve(server, taken.job)
        server = next
        yield* Deferred.done(taken.ended, exit)
      }
    })
  for (const server of servers) yield* Effect.forkIn(loop(server), scope)
  return (job: J, priority: number): Effect.Effect<void, E> =>
    Effect.gen(function*() {
      const entry = { job, priority, ended: yield* Deferred.make<void, E>() }
      waiting.push(entry)
      yield* Queue.offer(sent, undefined)
      return yield* Deferred.await(entry.ended).pipe(Effect.onInterrupt(() =>
        Effect.sync(() => {
          const at = waiting.indexOf(entry)
          if (at >= 0) waiting.splice(at, 1)
        })
      ))
    })
})

/**
 * `workers` compute processes and a way to run a job on one; of the jobs
 * waiting, a free process takes the one of the highest priority.
 */
export const pool = Effect.fn("Local.pool")(function*(workers: number, options: Options) {
  const scope = yield* Effect.scope
  let spawned = 0
  const start = Effect.suspend(() => spawn(`worker ${++spawned}`, options)).pipe(Scope.provide(scope))
  const children = yield* Effect.forEach(Array.from({ length: workers }), () => start, { concurrency: "unbounded" })
  const attempts = options.attempts ?? 3
  const run = yield* prioritised(children, (first: Child, { job, report }: { readonly job: Job; readonly report: Report }) =>
    Effect.gen(function*() {
      let child = first
      for (let attempt = 1;; attempt++) {
        const outcome = yield* child.run(job, report)
        if (outcome._tag === "Settled") {
          const { message } = outcome
          return {
            next: child,
            exit: message._tag === "Failed" ? Exit.fail(new JobFailed({ key: message.key, stage: message.stage, reason: message.reason })) : Exit.void
          }
        }
        yield* Effect.logWarning(`${child.name} ended (${outcome.how}) running ${job.node.stage} of ${job.label}; starting another`)
        child = yield* start
        if (attempt >= attempts) {
          return { next: child, exit: Exit.fail(new JobFailed({ key: job.key, stage: job.node.stage, reason: `its compute process ended (${outcome.how}) on each of ${attempts} attempts` })) }
        }
      }
    }))
  return { run: (job: Job, report: Report = () => Effect.void, priority = 0) => run({ job, report }, priority) }
})

/** The local executor: `workers` compute processes (default: one per core). */
export const layer = (options: Options & { readonly workers?: number; readonly data: Presets.DataSource }) =>
  Layer.effect(
    Executor,
    Effect.gen(function*() {
      const workers = options.workers ?? os.availableParallelism()
      const { run } = yield* pool(workers, options)
      return {
        name: `local (${workers} worker process${workers === 1 ? "" : "es"})`,
        submit: ({ report, priority, ...request }) => run({ ...request, data: options.data }, report, priority)
      }
    })
  )
