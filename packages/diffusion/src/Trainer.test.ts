import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { LatentDataset } from "@tinyfusion/data"
import { type Config, Fixtures, Init } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as Trainer from "./Trainer.ts"
import * as Training from "./Training.ts"

const tiny: Config.Config = { ...Fixtures.tiny, hiddenSize: 16, depth: 2 }

/** Latents drawn from the step: a pure function of (seed, step), as the real dataset. */
const latents = Layer.succeed(LatentDataset, LatentDataset.of({
  count: 64,
  classes: 3,
  latentShape: [4, 4, 2],
  scale: 1,
  batch: ({ seed, batchSize }, step) => ({
    latents: Rng.normal(Rng.stream(seed, "test/latents"), step, batchSize * 32),
    labels: Rng.integers(Rng.stream(seed, "test/labels"), step, batchSize, 0, 3),
    shape: [batchSize, 4, 4, 2],
    mirrored: []
  })
}))

const settings: Trainer.Settings = {
  steps: 12,
  batchSize: 4,
  seed: 1,
  lr: 0.1,
  lrFloor: 0.01,
  weightDecay: 0,
  emaDecay: 0.5,
  checkpointEvery: 0,
  curveEvery: 5,
  nonFinite: "fail"
}

/** loss = w₀ − w₁ (+ NaN at `poisonAt`): every gradient is ±1, so AdamW moves each weight by the step's lr. */
const linearTask = (poisonAt: number): Trainer.Task => ({
  data: tiny,
  draws: (labels, at) => Training.draws({ _tag: "sit" }, tiny, labels, at),
  init: { w: HostTensor.float32([2], Float32Array.of(5, -5)) },
  loss: (batch) => (params) => {
    const w = (params as { w: tf.Tensor }).w
    const value = tf.sum(tf.mul(w, tf.tensor1d([1, -1]))) as tf.Scalar
    const loss = batch.step === poisonAt ? tf.add(value, Number.NaN) as tf.Scalar : value
    return { loss, terms: { half: tf.div(value, 2) as tf.Scalar } }
  }
})

const Linear = Stage.make({
  name: "linear-loop",
  module: import.meta.url,
  config: Schema.Struct({ settings: Trainer.Settings, poisonAt: Schema.Int }),
  output: Schema.Struct({
    tag: Schema.String,
    step: Schema.Int,
    w: Schema.Array(Schema.Number),
    ema: Schema.Array(Schema.Number),
    skipped: Schema.Array(Schema.Int),
    curve: Trainer.Curve
  }),
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const out = yield* Trainer.run(ctx, config.settings, linearTask(config.poisonAt))
      if (out._tag === "Diverged") return { tag: out._tag, step: out.step, w: [], ema: [], skipped: [], curve: out.curve }
      const leaf = (tree: HostTensor.HostTree) => Array.from((tree as { w: HostTensor.HostTensor }).w.data)
      return { tag: out._tag, step: -1, w: leaf(out.params), ema: leaf(out.ema), skipped: out.skipped, curve: out.curve }
    })
})

const layers = Layer.mergeAll(ArtifactStore.layerTemp, latents, Logger.layer([])).pipe(Layer.provideMerge(NodeServices.layer))

/** The cosine rate of each step, in float64. */
const rates = (s: Trainer.Settings) =>
  Array.from({ length: s.steps }, (_, i) => s.lrFloor! + ((s.lr - s.lrFloor!) * (1 + Math.cos((Math.PI * i) / s.steps))) / 2)

describe("Trainer", () => {
  it.effect("cosine lr, EMA and the curve follow their closed forms on a linear loss", () =>
    Effect.gen(function*() {
      const out = (yield* Stage.run(Linear, { settings, poisonAt: -1 }, {})).output
      const lr = rates(settings)
      let moved = 0
      let ema = 5
      const losses: Array<number> = []
      for (const r of lr) {
        losses.push(2 * (5 - moved))
        moved += r
        ema = 0.5 * ema + 0.5 * (5 - moved)
      }
      assert.closeTo(out.w[0]!, 5 - moved, 1e-4)
      assert.closeTo(out.w[1]!, -5 + moved, 1e-4)
      assert.closeTo(out.ema[0]!, ema, 1e-4)
      // Every 5 steps and the last one: the loss before that step's update, and its terms.
      assert.deepStrictEqual(out.curve.map((p) => p.step), [0, 5, 10, 11])
      for (const p of out.curve) {
        assert.closeTo(p.loss, losses[p.step]!, 1e-4)
        assert.closeTo(p.terms["half"]!, losses[p.step]! / 2, 1e-4)
      }
    }).pipe(Effect.provide(layers), Effect.provide(Compute.cpu)))

  it.effect("a non-finite loss: skip drops the update, fail and rollback end Diverged with the curve so far", () =>
    Effect.gen(function*() {
      const { lrFloor: _, ...constant } = { ...settings, curveEvery: 1 }
      const skip = (yield* Stage.run(Linear, { settings: { ...constant, nonFinite: "skip" }, poisonAt: 3 }, {})).output
      assert.deepStrictEqual([skip.tag, skip.skipped], ["Finished", [3]])
      // 11 updates of lr 0.1.
      assert.closeTo(skip.w[0]!, 5 - 1.1, 1e-4)
      assert.notInclude(skip.curve.map((p) => p.step), 3)

      const fail = (yield* Stage.run(Linear, { settings: { ...constant, nonFinite: "fail" }, poisonAt: 3 }, {})).output
      assert.deepStrictEqual([fail.tag, fail.step, fail.curve.map((p) => p.step)], ["Diverged", 3, [0, 1, 2]])

      const back = (yield* Stage.run(Linear, { settings: { ...constant, nonFinite: "rollback", checkpointEvery: 2 }, poisonAt: 3 }, {})).output
      assert.deepStrictEqual([back.tag, back.step, back.curve.map((p) => p.step)], ["Diverged", 3, [0, 1, 2]])
    }).pipe(Effect.provide(layers), Effect.provide(Compute.cpu)))

  it.effect("a DiT run stopped mid-way resumes from its checkpoint to the bits of an uninterrupted run", () =>
    Effect.gen(function*() {
      const loop: Trainer.Settings = { ...settings, steps: 10, lr: 1e-3, lrFloor: 1e-4, maxGradNorm: 1, emaDecay: 0.9, checkpointEvery: 4, curveEvery: 3 }
      const objective = yield* Trainer.objective("dit", tiny)
      const task = Trainer.diffusionTask(objective, tiny, Init.host(tiny, 0))
      const stops = { at: -1 }
      const Run = Stage.make({
        name: "dit-loop",
        module: import.meta.url,
        config: Schema.Struct({ name: Schema.String }),
        output: Schema.Struct({ resumedFrom: Schema.Int, curve: Trainer.Curve }),
        run: (_config, _inputs, ctx) =>
          Effect.gen(function*() {
            const stopping: Trainer.Task = {
              ...task,
              loss: (batch) => {
                if (batch.step === stops.at) {
                  stops.at = -1
                  throw new Error("interrupted")
                }
                return task.loss(batch)
              }
            }
            const out = yield* Trainer.run(ctx, loop, stopping)
            if (out._tag === "Diverged") return yield* Effect.die("diverged")
            yield* ctx.writeTensors("params.safetensors", out.params)
            yield* ctx.writeTensors("ema.safetensors", out.ema)
            return { resumedFrom: out.resumedFrom, curve: out.curve }
          })
      })
      const compute = yield* Compute
      const before = (yield* compute.memory).tensors
      const whole = yield* Stage.run(Run, { name: "whole" }, {})
      stops.at = 6
      const died = yield* Effect.exit(Stage.run(Run, { name: "stopped" }, {}))
      assert.strictEqual(died._tag, "Failure")
      const resumed = yield* Stage.run(Run, { name: "stopped" }, {})
      assert.strictEqual(resumed.output.resumedFrom, 4)
      assert.strictEqual(whole.output.resumedFrom, 0)
      assert.deepStrictEqual(resumed.output.curve, whole.output.curve)
      assert.deepStrictEqual(resumed.output.curve.map((p) => p.step), [0, 3, 6, 9])
      for (const file of ["params.safetensors", "ema.safetensors"]) {
        const a = ParamTree.flatten(yield* whole.tensors(file), HostTensor.isHostTensor)
        const b = new Map(ParamTree.flatten(yield* resumed.tensors(file), HostTensor.isHostTensor))
        assert.strictEqual(a.length, b.size)
        for (const [key, t] of a) assert.isTrue(HostTensor.bitEqual(t, b.get(key)!), `${file} ${key}`)
      }
      assert.strictEqual((yield* compute.memory).tensors, before)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 60_000)
})
