/**
 * A job: one node of a cell's graph, as data a worker in another process
 * runs on the same store. It carries the node's description (stage name,
 * encoded config, input keys), the key the requester computed for it, and
 * where the dataset is, for the stages that read it.
 *
 * A worker rebuilds the node from the stages it knows (`Cells.stages`),
 * keys it with its own code and refuses a job whose key differs: a worker
 * running other code would otherwise store its result under the
 * requester's key. Outputs are content-addressed and stages resume from
 * their checkpoints, so running a job twice (at-least-once delivery) is
 * safe: the second run is a cache hit or waits on the key's lock.
 */
import { Cause, type Context, Effect, Layer, Schema, type Scope } from "effect"
import { Graph } from "@tinyfusion/core"
import type { Dataset, DatasetError } from "@tinyfusion/data"
import { createHash } from "node:crypto"
import * as Cells from "../cells.ts"
import * as Presets from "../presets.ts"

export const Job = Schema.Struct({
  /** The node's key as the requester computed it. */
  key: Schema.String,
  node: Graph.Description,
  /** What the node is for (a cell id, or "shared"), in progress lines. */
  label: Schema.String,
  data: Presets.DataSource
})
export type Job = typeof Job.Type

/** A job that ran and failed: the reason in words. */
export class JobFailed extends Schema.TaggedError<JobFailed>()("JobFailed", {
  key: Schema.String,
  stage: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.stage} ${this.key}: ${this.reason}`
  }
}

/** A queue's job id for a key: a UUID made of the key's sha256, so resubmitting a node names the same job. */
export const jobId = (key: string): string => {
  const h = createHash("sha256").update(key).digest("hex")
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`
}

const reasonOf = (error: unknown): string => (error instanceof Error ? error.message || error.name : String(error))

/** The dataset of a job's source, as a compute process holds it between jobs. */
export type Datasets = (source: Presets.DataSource) => Effect.Effect<Context.Context<Dataset>, DatasetError>

/**
 * The dataset of the last source asked for, kept for the next job of the
 * same source: loading it (reading Fashion-MNIST, generating the synthetic
 * images) took about a second of each job. A source is data, and the
 * dataset a value, so every job of one source sees the same images, as the
 * nodes of an in-process run do.
 */
export const datasets: Effect.Effect<Datasets, never, Scope.Scope> = Effect.map(Effect.scope, (scope) => {
  let held: { readonly source: string; readonly context: Context.Context<Dataset> } | undefined
  return (source) => {
    const id = JSON.stringify(source)
    if (held?.source === id) return Effect.succeed(held.context)
    return Effect.map(Layer.buildWithScope(Presets.dataLayer(source), scope), (context) => (held = { source: id, context }).context)
  }
})

/** Runs a job's node here (its inputs are committed artifacts of the store) under the job's key. */
export const perform = (job: Job, datasets: Datasets) =>
  Effect.gen(function*() {
    const node = yield* Graph.fromDescription(Cells.stages, job.node)
    const runner = yield* Graph.runner
    const key = yield* runner.key(node)
    if (key !== job.key) {
      return yield* Effect.fail(`this worker's code keys the node as ${key}: it runs another version of the code than the requester`)
    }
    yield* runner.run(node).pipe(Effect.provideContext(yield* datasets(job.data)))
  }).pipe(
    Effect.annotateLogs({ cell: job.label }),
    Effect.catchCause((cause) => Effect.fail(new JobFailed({ key: job.key, stage: job.node.stage, reason: reasonOf(Cause.squash(cause)) })))
  )
