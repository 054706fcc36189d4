/**
 * The checkpointed loop every long stage runs on (pre-training, mask
 * learning, recovery fine-tuning).
 *
 * The loop state is device tensors (params, optimiser moments, EMA, …) plus
 * a JSON value under a Schema (counters, data cursor). Every `every` steps it
 * is saved as a checkpoint of the owning stage's key; when the stage runs
 * again (after a kill, a crash or a transient failure) the loop resumes from
 * the newest checkpoint that verifies. Randomness must come from the step
 * (`Rng.stream(seed, name)` drawn at the step), so a resumed run computes
 * exactly what an uninterrupted one does: the same bits on the same backend.
 *
 * A non-finite loss is handled by policy: `skip` drops that step's update,
 * `rollback` reloads the newest checkpoint and replays (a step that is
 * non-finite again fails: the replay is deterministic), `fail` fails.
 */
import { Effect, Schema } from "effect"
import { type ComputeError, HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import { ArtifactStore, type CorruptArtifact } from "./ArtifactStore.ts"
import * as Manifest from "./Manifest.ts"
import * as Progress from "./Progress.ts"
import type * as Stage from "./Stage.ts"
import type { StoreError } from "./StoreError.ts"
import * as os from "node:os"

export class NonFiniteLoss extends Schema.TaggedError<NonFiniteLoss>()("NonFiniteLoss", {
  stage: Schema.String,
  step: Schema.Int,
  loss: Schema.Number,
  policy: Schema.String
}) {
  override get message(): string {
    return `stage ${this.stage}: loss ${this.loss} at step ${this.step} (policy ${this.policy})`
  }
}

/** A loop's state: a tree of device tensors of the loop's own shape T, and a JSON value. */
export interface State<J, T extends ParamTree.ParamTree = ParamTree.ParamTree> {
  /** Device tensors; a step may return some of its input leaves unchanged. */
  readonly tensors: T
  readonly data: J
}

export type NonFinitePolicy = "skip" | "rollback" | "fail"

export interface Options<J, JE, E, R, T extends ParamTree.ParamTree = ParamTree.ParamTree> {
  /** Total steps of the loop. */
  readonly steps: number
  /** Save a checkpoint after every this many steps (0: never). */
  readonly every: number
  /** The Schema of the JSON part of the state (validated on save and load). */
  readonly data: Schema.Codec<J, JE>
  /** The state before step 0. */
  readonly init: Effect.Effect<State<J, T>, E, R>
  /**
   * Step `step` (0-based) from the state after `step` steps. Leaves of the
   * input state that are not in the result are released by the loop.
   */
  readonly step: (state: State<J, T>, step: number) => Effect.Effect<{ readonly state: State<J, T>; readonly loss: number }, E, R>
  readonly nonFinite?: NonFinitePolicy
  /** Checkpoints kept (the newest); older ones are removed. Default 2. */
  readonly keep?: number
}

export interface Result<J, T extends ParamTree.ParamTree = ParamTree.ParamTree> {
  readonly state: State<J, T>
  /** The step the loop resumed from (0 for a fresh start). */
  readonly resumedFrom: number
  /** Steps whose update was skipped for a non-finite loss (policy `skip`). */
  readonly skipped: ReadonlyArray<number>
  readonly lastLoss: number
}

const tensorsFile = "state.safetensors"

const Saved = Schema.Struct({ data: Schema.Json, skipped: Schema.Array(Schema.Int) })

/** The manifest fields of a checkpoint of `ctx`'s stage at `step` (the store adds the files). */
const manifest = (ctx: Pick<Stage.Context, "key" | "stage" | "code">, step: number, output: Schema.Json): Omit<Manifest.Fields, "files"> => {
  const now = new Date().toISOString()
  return {
    format: Manifest.format,
    key: ctx.key,
    stage: ctx.stage,
    code: ctx.code,
    config: null,
    inputs: {},
    checkpoint: { step },
    output,
    metrics: {},
    timings: { startedAt: now, seconds: 0, attempts: 1 },
    backend: null,
    createdAt: now,
    host: os.hostname()
  }
}

/** Releases the leaves of `old` that `next` does not hold. */
const release = (old: ParamTree.ParamTree, next: ParamTree.ParamTree): void => {
  const kept = new Set(ParamTree.leaves(next))
  for (const t of ParamTree.leaves(old)) if (!kept.has(t)) t.dispose()
}

/** Runs the loop inside a stage, checkpointing under the stage's key. */
export const loop = Effect.fn("Checkpoint.loop")(function*<J, JE, E, R, T extends ParamTree.ParamTree = ParamTree.ParamTree>(
  ctx: Stage.Context,
  options: Options<J, JE, E, R, T>
): Effect.fn.Return<
  Result<J, T>,
  E | NonFiniteLoss | StoreError | CorruptArtifact | ComputeError,
  R | ArtifactStore
> {
  const store = yield* ArtifactStore
  const policy = options.nonFinite ?? "fail"
  const keep = Math.max(1, options.keep ?? 2)
  const decodeData = Schema.decodeUnknownEffect(options.data)
  const encodeData = Schema.encodeUnknownEffect(options.data)

  /** The newest checkpoint that verifies, as device state; corrupt ones are reported and removed. */
  const restore = Effect.gen(function*() {
    for (const { step, dir } of yield* store.checkpoints(ctx.key)) {
      const seen = yield* store.inspectDir(dir, ctx.key)
      const reason = seen._tag === "Missing"
        ? undefined
        : seen._tag === "Corrupt"
        ? seen.reason
        : seen.manifest.checkpoint?.step !== step || step > options.steps
        ? `step ${seen.manifest.checkpoint?.step} in a directory for step ${step}`
        : undefined
      if (seen._tag === "Valid" && reason === undefined) {
        const saved = yield* Effect.result(
          Effect.flatMap(Schema.decodeUnknownEffect(Saved)(seen.manifest.output), (s) =>
            Effect.map(decodeData(s.data), (data) => ({ data, skipped: s.skipped })))
        )
        if (saved._tag === "Success") {
          const bytes = yield* store.readFile(dir, seen.manifest, tensorsFile)
          const host = yield* Safetensors.decode(bytes).pipe(Effect.orElseSucceed(() => undefined))
          if (host !== undefined) {
            // A checkpoint under this key was saved from a T: the key covers the code that shaped it.
            const tensors = HostTensor.treeToTensors(ParamTree.unflatten(host.tensors)) as T
            yield* Effect.logInfo(`resuming from the checkpoint at step ${step}`)
            return { step, state: { tensors, data: saved.success.data }, skipped: saved.success.skipped }
          }
        }
        yield* Effect.logWarning(`checkpoint at step ${step} does not load; removing it`)
      } else if (reason !== undefined) {
        yield* Effect.logWarning(`checkpoint at step ${step} is corrupt (${reason}); removing it`)
      }
      yield* store.remove(dir)
    }
    return undefined
  })

  const save = (state: State<J, T>, step: number, skipped: ReadonlyArray<number>) =>
    Effect.scoped(Effect.gen(function*() {
      const staging = yield* store.staging
      const host = yield* HostTensor.treeFromTensors(state.tensors)
      yield* staging.writeTensors(tensorsFile, host)
      const data = yield* encodeData(state.data).pipe(Effect.orDie)
      yield* store.commit(staging, store.checkpointDir(ctx.key, step), manifest(ctx, step, { data: data as Schema.Json, skipped: [...skipped] }))
      for (const old of (yield* store.checkpoints(ctx.key)).slice(keep)) yield* store.remove(old.dir)
    }))

  const fresh = Effect.map(options.init, (state) => ({ step: 0, state, skipped: [] as ReadonlyArray<number> }))
  const start = (yield* restore) ?? (yield* fresh)
  let state = start.state
  let skipped = [...start.skipped]
  let step = start.step
  let lastLoss = Number.NaN
  const rolledBack = new Set<number>()
  const progress = yield* Progress.make(ctx.stage, options.steps, step)
  const body = Effect.gen(function*() {
    while (step < options.steps) {
      const out = yield* options.step(state, step)
      if (!Number.isFinite(out.loss)) {
        release(out.state.tensors, state.tensors)
        const failure = new NonFiniteLoss({ stage: ctx.stage, step, loss: out.loss, policy })
        if (policy === "fail" || (policy === "rollback" && rolledBack.has(step))) return yield* failure
        yield* Effect.logWarning(failure.message)
        if (policy === "skip") {
          skipped.push(step)
          step += 1
        } else {
          rolledBack.add(step)
          ParamTree.dispose(state.tensors)
          const back = (yield* restore) ?? (yield* fresh)
          state = back.state
          skipped = [...back.skipped]
          step = back.step
          continue
        }
      } else {
        release(state.tensors, out.state.tensors)
        state = out.state
        lastLoss = out.loss
        step += 1
      }
      if (options.every > 0 && step % options.every === 0 && step < options.steps) yield* save(state, step, skipped)
      yield* progress.update(step, { loss: lastLoss })
    }
    yield* progress.finish
  })
  // On failure the loop's tensors go; on success the caller owns the final state.
  yield* body.pipe(Effect.onError(() => Effect.sync(() => ParamTree.dispose(state.tensors))))
  return { state, resumedFrom: start.step, skipped, lastLoss }
})

/**
 * Numbered parts of a stage's result (latent shards, chunks of evaluation
 * features), each committed as a checkpoint of the stage's key as soon as it
 * is done (step = index + 1) and verified by the store when read back. A
 * rerun after a kill reads the finished parts and computes only the rest.
 * Unlike `loop`'s checkpoints, every part is kept until the stage's artifact
 * supersedes them.
 */
export interface Parts {
  /** Part `index`'s bytes if it was committed and verifies, otherwise undefined. */
  readonly read: (index: number) => Effect.Effect<Uint8Array | undefined, StoreError>
  readonly write: (index: number, bytes: Uint8Array) => Effect.Effect<void, StoreError>
}

/** The parts of the stage running in `ctx`, part `index` held in the file `file(index)`. */
export const parts = (ctx: Pick<Stage.Context, "key" | "stage" | "code">, file: (index: number) => string): Effect.Effect<Parts, never, ArtifactStore> =>
  Effect.map(Effect.service(ArtifactStore), (store) => ({
    read: (index) =>
      Effect.gen(function*() {
        const dir = store.checkpointDir(ctx.key, index + 1)
        const seen = yield* store.inspectDir(dir, ctx.key)
        if (seen._tag !== "Valid") return undefined
        return yield* store.readFile(dir, seen.manifest, file(index)).pipe(Effect.orElseSucceed(() => undefined))
      }),
    write: (index, bytes) =>
      Effect.scoped(Effect.gen(function*() {
        const staging = yield* store.staging
        yield* staging.writeBytes(file(index), bytes)
        yield* store.commit(staging, store.checkpointDir(ctx.key, index + 1), manifest(ctx, index + 1, null))
      }))
  }))
