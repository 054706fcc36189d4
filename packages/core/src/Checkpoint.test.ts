import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, Logger, type Path, Schedule, Schema } from "effect"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import { ArtifactStore } from "./ArtifactStore.ts"
import * as Checkpoint from "./Checkpoint.ts"
import * as Retry from "./Retry.ts"
import * as Stage from "./Stage.ts"

/** What the next run's step function does besides stepping; reset per test. */
const hooks = {
  calls: [] as Array<number>,
  /** Fail once at this step with this error. */
  failAt: undefined as undefined | { readonly step: number; readonly transient: boolean },
  /** Report a NaN loss at these steps every time. */
  poison: new Set<number>(),
  /** Report a NaN loss at these steps the first time only. */
  poisonOnce: new Set<number>(),
  /** Leave the state unchanged at these steps (the reference for `skip`). */
  identity: new Set<number>()
}
const reset = () => {
  hooks.calls = []
  hooks.failAt = undefined
  hooks.poison = new Set()
  hooks.poisonOnce = new Set()
  hooks.identity = new Set()
}

class Boom extends Schema.TaggedError<Boom>()("Boom", { step: Schema.Int }) {}

const noise = Rng.stream(3, "checkpoint-test/noise")

/** w ← 0.9·w + 0.1·noise(step); data.count counts applied updates. */
const Loop = Stage.make({
  name: "loop",
  module: import.meta.url,
  config: Schema.Struct({ steps: Schema.Int, every: Schema.Int, policy: Schema.Literals(["skip", "rollback", "fail"]) }),
  output: Schema.Struct({ resumedFrom: Schema.Int, skipped: Schema.Array(Schema.Int), count: Schema.Int }),
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const done = yield* Checkpoint.loop(ctx, {
        steps: config.steps,
        every: config.every,
        nonFinite: config.policy,
        data: Schema.Struct({ count: Schema.Int }),
        init: Effect.sync(() => ({ tensors: { w: tf.tensor1d([1, -2, 3, 0.5]) as tf.Tensor }, data: { count: 0 } })),
        step: (state, step) =>
          compute.scoped(Effect.gen(function*() {
            hooks.calls.push(step)
            if (hooks.failAt?.step === step) {
              const transient = hooks.failAt.transient
              hooks.failAt = undefined
              return yield* (transient ? new Retry.Transient({ operation: "step", cause: "device lost" }) : new Boom({ step }))
            }
            if (hooks.identity.has(step)) return { state, loss: 1 }
            const w = state.tensors.w
            const next = tf.add(tf.mul(w, 0.9), tf.mul(Rng.normalTensor(noise, step, [4]), 0.1))
            const loss = (yield* compute.read(tf.sum(tf.square(next))))[0]!
            const poisoned = hooks.poison.has(step) || hooks.poisonOnce.delete(step)
            return { state: { tensors: { w: next }, data: { count: state.data.count + 1 } }, loss: poisoned ? Number.NaN : loss }
          }))
      })
      const host = yield* HostTensor.treeFromTensors(done.state.tensors)
      yield* ctx.writeTensors("state.safetensors", host)
      const memory = yield* compute.memory
      yield* ctx.metric("liveTensorsBeforeRelease", memory.tensors)
      ParamTree.dispose(done.state.tensors)
      return { resumedFrom: done.resumedFrom, skipped: done.skipped, count: done.state.data.count }
    })
})

const config = (policy: "skip" | "rollback" | "fail" = "fail") => ({ steps: 20, every: 5, policy }) as const

const captured: Array<string> = []

/** Runs `f` against a fresh store; several calls in one test get separate stores. */
const withStore = <A, E>(f: (root: string) => Effect.Effect<A, E, ArtifactStore | FileSystem.FileSystem | Compute>) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const root = yield* fs.makeTempDirectoryScoped({ prefix: "checkpoint-test-" })
    return yield* f(root).pipe(Effect.provide(ArtifactStore.layer(root)))
  }))

const finalW = (artifact: Stage.Artifact<unknown>) =>
  Effect.map(artifact.tensorMap("state.safetensors"), (m) => m.get("w")!)

/** The final w of an uninterrupted run with the given hooks. */
const reference = (setup: () => void, policy: "skip" | "rollback" | "fail" = "fail") =>
  withStore(() =>
    Effect.gen(function*() {
      reset()
      setup()
      return yield* finalW(yield* Stage.run(Loop, config(policy), {}))
    })
  )

const env = <A, E>(self: Effect.Effect<A, E, FileSystem.FileSystem | Path.Path | Compute>) =>
  Effect.gen(function*() {
    captured.length = 0
    reset()
    return yield* self
  }).pipe(
    Effect.provide(Layer.mergeAll(
      NodeServices.layer,
      Compute.cpu,
      Logger.layer([Logger.make(({ message }) => captured.push(String(message)))])
    )),
    Effect.provideService(Retry.Policy, Schedule.recurs(2))
  )

describe("Checkpoint.loop", () => {
  it.live("a failed run resumes from its newest checkpoint and ends bit-identical", () =>
    env(Effect.gen(function*() {
      const uninterrupted = yield* reference(() => {})
      reset()
      yield* withStore((root) =>
        Effect.gen(function*() {
          const fs = yield* FileSystem.FileSystem
          hooks.failAt = { step: 13, transient: false }
          const failed = yield* Effect.flip(Stage.run(Loop, config(), {}))
          assert.instanceOf(failed, Boom)
          // Checkpoints after steps 5 and 10 (the two newest are kept).
          const key = yield* Stage.key(Loop, config(), {})
          assert.deepStrictEqual(yield* fs.readDirectory(`${root}/checkpoints/${key}`), ["0000000005", "0000000010"])
          hooks.calls = []
          const resumed = yield* Stage.run(Loop, config(), {})
          assert.deepStrictEqual(resumed.output, { resumedFrom: 10, skipped: [], count: 20 })
          assert.deepStrictEqual(hooks.calls, [10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
          assert.isTrue(HostTensor.bitEqual(yield* finalW(resumed), uninterrupted))
          // The finished artifact supersedes its checkpoints.
          assert.isFalse(yield* fs.exists(`${root}/checkpoints/${key}`))
          // Only the final state is alive when the stage writes it: nothing leaked from 10 steps.
          assert.strictEqual(resumed.manifest.metrics["liveTensorsBeforeRelease"], 1)
        })
      )
    })))

  it.live("a transient failure mid-loop is retried by the stage and resumes within the same run", () =>
    env(Effect.gen(function*() {
      const uninterrupted = yield* reference(() => {})
      reset()
      yield* withStore(() =>
        Effect.gen(function*() {
          hooks.failAt = { step: 7, transient: true }
          const run = yield* Stage.run(Loop, config(), {})
          assert.strictEqual(run.manifest.timings.attempts, 2)
          assert.strictEqual(run.output.resumedFrom, 5)
          assert.deepStrictEqual(hooks.calls.slice(0, 10), [0, 1, 2, 3, 4, 5, 6, 7, 5, 6])
          assert.isTrue(HostTensor.bitEqual(yield* finalW(run), uninterrupted))
        })
      )
    })))

  it.live("a corrupt newest checkpoint is reported, removed and the older one used", () =>
    env(Effect.gen(function*() {
      const uninterrupted = yield* reference(() => {})
      reset()
      yield* withStore((root) =>
        Effect.gen(function*() {
          const fs = yield* FileSystem.FileSystem
          hooks.failAt = { step: 12, transient: false }
          yield* Effect.flip(Stage.run(Loop, config(), {}))
          const key = yield* Stage.key(Loop, config(), {})
          yield* fs.truncate(`${root}/checkpoints/${key}/0000000010/state.safetensors`, 16)
          const resumed = yield* Stage.run(Loop, config(), {})
          assert.strictEqual(resumed.output.resumedFrom, 5)
          assert.isTrue(captured.some((m) => /checkpoint at step 10 is corrupt \(file state.safetensors has 16 bytes/.test(m)))
          assert.isTrue(HostTensor.bitEqual(yield* finalW(resumed), uninterrupted))
        })
      )
    })))

  it.live("an edited checkpoint manifest is skipped: the loop resumes from an older one, or from scratch, to the same bits", () =>
    env(Effect.gen(function*() {
      const uninterrupted = yield* reference(() => {})
      reset()
      yield* withStore((root) =>
        Effect.gen(function*() {
          const fs = yield* FileSystem.FileSystem
          const key = yield* Stage.key(Loop, config(), {})
          const edit = (step: number, from: string, to: string) =>
            Effect.gen(function*() {
              const at = `${root}/checkpoints/${key}/${String(step).padStart(10, "0")}/manifest.json`
              const text = yield* fs.readFileString(at)
              assert.include(text, from)
              yield* fs.writeFileString(at, text.replace(from, to))
            })
          // As adamStep 40 → 41 in a teacher's checkpoint: the loop's counter after step 10.
          hooks.failAt = { step: 12, transient: false }
          yield* Effect.flip(Stage.run(Loop, config(), {}))
          yield* edit(10, `"count": 10`, `"count": 11`)
          hooks.calls = []
          const resumed = yield* Stage.run(Loop, config(), {})
          assert.deepStrictEqual(resumed.output, { resumedFrom: 5, skipped: [], count: 20 })
          assert.isTrue(captured.some((m) => /checkpoint at step 10 is corrupt \(manifest.json was edited after it was written/.test(m)))
          assert.isTrue(HostTensor.bitEqual(yield* finalW(resumed), uninterrupted))

          // Both checkpoints edited (the step of one, the skipped steps of the other): from scratch.
          yield* fs.remove(`${root}/artifacts/${key}`, { recursive: true })
          hooks.failAt = { step: 12, transient: false }
          yield* Effect.flip(Stage.run(Loop, config(), {}))
          yield* edit(10, `"step": 10`, `"step": 11`)
          yield* edit(5, `"skipped": []`, `"skipped": [3]`)
          const again = yield* Stage.run(Loop, config(), {})
          assert.deepStrictEqual(again.output, { resumedFrom: 0, skipped: [], count: 20 })
          assert.isTrue(HostTensor.bitEqual(yield* finalW(again), uninterrupted))
        })
      )
    })))

  it.live("skip: a non-finite step's update is dropped, as if the step left the state alone", () =>
    env(Effect.gen(function*() {
      const expected = yield* reference(() => (hooks.identity = new Set([3, 11])))
      reset()
      yield* withStore(() =>
        Effect.gen(function*() {
          hooks.poison = new Set([3, 11])
          const run = yield* Stage.run(Loop, config("skip"), {})
          assert.deepStrictEqual(run.output, { resumedFrom: 0, skipped: [3, 11], count: 18 })
          assert.isTrue(HostTensor.bitEqual(yield* finalW(run), expected))
          assert.isTrue(captured.some((m) => /loop: loss NaN at step 3 \(policy skip\)/.test(m)))
        })
      )
    })))

  it.live("rollback: a one-off non-finite loss reloads the last checkpoint and replays to the same bits", () =>
    env(Effect.gen(function*() {
      const uninterrupted = yield* reference(() => {})
      reset()
      yield* withStore(() =>
        Effect.gen(function*() {
          hooks.poisonOnce = new Set([7])
          const run = yield* Stage.run(Loop, config("rollback"), {})
          assert.deepStrictEqual(hooks.calls.slice(0, 11), [0, 1, 2, 3, 4, 5, 6, 7, 5, 6, 7])
          assert.strictEqual(hooks.calls.length, 23)
          assert.strictEqual(run.output.count, 20)
          assert.isTrue(HostTensor.bitEqual(yield* finalW(run), uninterrupted))
        })
      )
    })))

  it.live("rollback before the first checkpoint restarts from the initial state", () =>
    env(Effect.gen(function*() {
      const uninterrupted = yield* reference(() => {})
      reset()
      yield* withStore(() =>
        Effect.gen(function*() {
          hooks.poisonOnce = new Set([2])
          const run = yield* Stage.run(Loop, config("rollback"), {})
          assert.deepStrictEqual(hooks.calls.slice(0, 6), [0, 1, 2, 0, 1, 2])
          assert.isTrue(HostTensor.bitEqual(yield* finalW(run), uninterrupted))
        })
      )
    })))

  it.live("fail, and rollback into the same non-finite step again, stop with NonFiniteLoss", () =>
    env(withStore(() =>
      Effect.gen(function*() {
        hooks.poison = new Set([6])
        const failed = yield* Effect.flip(Stage.run(Loop, config("fail"), {}))
        assert.instanceOf(failed, Checkpoint.NonFiniteLoss)
        assert.strictEqual((failed as Checkpoint.NonFiniteLoss).step, 6)
        hooks.calls = []
        const again = yield* Effect.flip(Stage.run(Loop, config("rollback"), {}))
        assert.instanceOf(again, Checkpoint.NonFiniteLoss)
        assert.match(again.message, /loss NaN at step 6 \(policy rollback\)/)
        // The policy is part of the config, so this is a fresh key: steps 0–6, back to the checkpoint at 5, 5 and 6 again.
        assert.deepStrictEqual(hooks.calls, [0, 1, 2, 3, 4, 5, 6, 5, 6])
        const memory = yield* (yield* Compute).memory
        assert.strictEqual(memory.tensors, 0)
      })
    )))
})
