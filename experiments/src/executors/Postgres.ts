/**
 * Nodes as durable jobs on PostgreSQL, through pg-boss (an existing
 * engine: we write no queue). `layer` is the requester's side (`tinyfusion
 * repro --queue URL`): each node whose inputs are committed is sent as a
 * job whose id is made of its key, so a second requester of the same grid
 * attaches to the jobs there are, and the requester waits for each. `serve`
 * is a worker's side (`tinyfusion worker --queue URL`): it takes one job at
 * a time and runs it in a compute process (Local.pool), so the job's
 * heartbeat, sent from this process's event loop, is never starved by a
 * long synchronous computation.
 *
 * The lease is pg-boss's job heartbeat: a worker that stops beating for
 * `heartbeatSeconds` (killed, its machine gone) loses the job, which is
 * retried (at-least-once) by another worker; the stage resumes from its
 * checkpoints once the dead holder's lock is judged stale. A job failing
 * `attempts` times is failed, and the requester names it. Queues are per
 * Compute backend (`tinyfusion.wasm`, …), since results are bit-identical
 * on one backend only.
 */
import { Cause, Duration, Effect, Exit, Layer, Schema, type Scope } from "effect"
import { PgBoss } from "pg-boss"
import type * as Presets from "../presets.ts"
import { Executor, type Request } from "./Executor.ts"
import { Job, JobFailed, jobId } from "./Job.ts"
import * as Local from "./Local.ts"
import * as View from "./View.ts"

/** The queue cannot be used: a bad URL, an unreachable server, credentials refused. */
export class QueueUnavailable extends Schema.TaggedError<QueueUnavailable>()("QueueUnavailable", {
  queue: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `queue ${this.queue}: ${this.reason}`
  }
}

export interface Settings {
  /** A worker silent this long loses its job (pg-boss's minimum is 10). */
  readonly heartbeatSeconds: number
  /** How often pg-boss looks for silent workers (and other maintenance). */
  readonly monitorSeconds: number
  /** Tries of a job before it is failed. */
  readonly attempts: number
  /** How often the requester looks at a job it waits for. */
  readonly pollMillis: number
}

export const defaults: Settings = { heartbeatSeconds: 30, monitorSeconds: 10, attempts: 3, pollMillis: 500 }

/** The URL without its password, for messages. */
export const redact = (url: string): string => {
  try {
    const u = new URL(url)
    u.password = ""
    return u.toString().replace(/^(postgres(ql)?:\/\/[^@/]*):@/, "$1@")
  } catch {
    return url.replace(/:[^:@/]*@/, ":***@")
  }
}

const reasonOf = (error: unknown): string => {
  const e = error as { message?: string; code?: string; errors?: ReadonlyArray<unknown> }
  // An AggregateError (every address refused) says nothing in its own message.
  if ((e.message === undefined || e.message === "") && Array.isArray(e.errors) && e.errors.length > 0) return reasonOf(e.errors[0])
  const text = e.message ?? String(error)
  return e.code === "ECONNREFUSED" ? `cannot connect (${text}): is PostgreSQL running there?` : text
}

/** The queue's name for a backend. */
export const queueName = (backend: string) => `tinyfusion.${backend}`

/** pg-boss on `url`, started (its schema created on first use) and stopped with the scope; the queue of `backend` created. */
export const connect = Effect.fn("Postgres.connect")(function*(url: string, backend: string, settings: Settings = defaults) {
  const shown = redact(url)
  const fail = (reason: string) => new QueueUnavailable({ queue: shown, reason })
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return yield* fail("not a URL; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    return yield* fail(`a ${parsed.protocol} URL; expected postgres://USER:PASSWORD@HOST:PORT/DATABASE`)
  }
  const boss = new PgBoss({
    connectionString: url,
    application_name: "tinyfusion",
    connectionTimeoutMillis: 10_000,
    max: 4,
    superviseIntervalSeconds: settings.monitorSeconds,
    monitorIntervalSeconds: settings.monitorSeconds,
    openTelemetry: { enabled: false }
  })
  // Errors of background work (maintenance, a dropped connection) are reported; pg-boss retries them.
  boss.on("error", (error: unknown) => Effect.runFork(Effect.logWarning(`queue ${shown}: ${reasonOf(error)}`)))
  yield* Effect.acquireRelease(
    Effect.tryPromise({ try: () => boss.start(), catch: (e) => fail(reasonOf(e)) }),
    () => Effect.promise(() => boss.stop({ graceful: false, close: true }).catch(() => undefined))
  )
  const name = queueName(backend)
  yield* Effect.tryPromise({
    try: () =>
      boss.createQueue(name, {
        heartbeatSeconds: settings.heartbeatSeconds,
        // A node may run for hours; the heartbeat, not this, says whether its worker is alive (24 h is pg-boss's most).
        expireInSeconds: 24 * 3600,
        retryLimit: settings.attempts - 1,
        retryDelay: 1
      }),
    catch: (e) => fail(reasonOf(e))
  })
  return { boss, name, shown }
})

const tryQueue = <A>(shown: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (e) => new QueueUnavailable({ queue: shown, reason: reasonOf(e) }) })

const encodeJob = Schema.encodeSync(Job)
const decodeJob = Schema.decodeUnknownEffect(Job)

/**
 * The requester's executor: each node is a job on the queue of this
 * process's backend, sent once (a job of its id that failed before is
 * retried), then waited for.
 */
export const layer = (url: string, options: { readonly backend: string; readonly data: Presets.DataSource; readonly settings?: Settings }) =>
  Layer.effect(
    Executor,
    Effect.gen(function*() {
      const settings = options.settings ?? defaults
      const { boss, name, shown } = yield* connect(url, options.backend, settings)
      const queue = <A>(f: () => Promise<A>) => tryQueue(shown, f).pipe(Effect.orDie)
      const submit = ({ report, priority, ...request }: Request) =>
        Effect.gen(function*() {
          const id = jobId(request.key)
          const job: Job = { ...request, data: options.data }
          // pg-boss hands out the highest priority first, then the oldest.
          const send = queue(() => boss.send(name, encodeJob(job) as object, { id, priority }))
          const sent = yield* send
          if (sent === null) {
            const there = yield* queue(() => boss.getJobById(name, id))
            if (there === null) yield* send
            else if (there.state === "failed" || there.state === "cancelled") {
              yield* Effect.logInfo(`${request.node.stage} of ${request.label}: its job ${id} had ${there.state}; retrying it`)
              yield* queue(() => boss.retry(name, id))
            } else if (there.state === "completed") {
              // Completed, yet the store lacks it (the requester looked): collected since, or another store. Run it again.
              yield* queue(() => boss.deleteJob(name, id))
              yield* send
            } else yield* Effect.logInfo(`${request.node.stage} of ${request.label}: attached to job ${id} (${there.state})`)
          }
          let last = ""
          while (true) {
            const seen = yield* queue(() => boss.getJobById(name, id))
            if (seen === null) return yield* new JobFailed({ key: request.key, stage: request.node.stage, reason: `its job ${id} was deleted from the queue` })
            if (seen.state === "completed") return
            if (seen.state === "failed" || seen.state === "cancelled") {
              const output = seen.output as { readonly message?: unknown } | null
              const reason = typeof output?.message === "string" ? output.message : `its job ${id} ${seen.state}`
              return yield* new JobFailed({ key: request.key, stage: request.node.stage, reason: `${reason} (after ${seen.retryCount + 1} attempts)` })
            }
            const now = `${seen.state}${seen.retryCount > 0 ? `, attempt ${seen.retryCount + 1}` : ""}`
            if (now !== last && last !== "") yield* Effect.logInfo(`${request.node.stage} of ${request.label}: ${now}`)
            // The queue says which state a job is in, not who runs it nor how far it is (the worker's own log shows that).
            if (now !== last) yield* report(seen.state === "active" ? { _tag: "Started", worker: "a queue worker" } : { _tag: "Queued", state: now })
            last = now
            yield* Effect.sleep(Duration.millis(settings.pollMillis))
          }
        })
      return { name: `postgres (${shown}, queue ${name})`, submit }
    })
  )

/**
 * A worker: takes jobs from the queue of its backend, one at a time, and
 * runs each in a compute process on `store`, until interrupted.
 */
export const serve = (url: string, options: Local.Options & { readonly settings?: Settings }): Effect.Effect<never, QueueUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const settings = options.settings ?? defaults
    const { boss, name, shown } = yield* connect(url, options.backend, settings)
    const { run } = yield* Local.pool(1, { ...options, attempts: 1 })
    const view = yield* View.make(0)
    const context = yield* Effect.context<never>()
    const handle = (raw: unknown): Effect.Effect<void, JobFailed | Schema.SchemaError> =>
      Effect.gen(function*() {
        const job = yield* decodeJob(raw)
        yield* Effect.logInfo(`${job.node.stage} of ${job.label} (${job.key}): started`)
        const started = Date.now()
        yield* view.submitted(job.key, job.node.stage, job.label)
        yield* run(job, (update) => view.update(job.key, update)).pipe(Effect.onExit((exit) => view.ended(job.key, exit._tag === "Success")))
        yield* Effect.logInfo(`${job.node.stage} of ${job.label}: done in ${((Date.now() - started) / 1000).toFixed(1)} s`)
      })
    yield* tryQueue(shown, () =>
      boss.work(name, { localConcurrency: 1, batchSize: 1, pollingIntervalSeconds: 0.5 }, async ([job]) => {
        const exit = await Effect.runPromiseExitWith(context)(handle(job!.data))
        if (Exit.isFailure(exit)) {
          const error = Cause.squash(exit.cause)
          throw new Error(error instanceof Error ? error.message : String(error))
        }
      }))
    yield* Effect.logInfo(`worker on ${shown}, queue ${name}, store ${options.store}: waiting for jobs`)
    return yield* Effect.never
  })
