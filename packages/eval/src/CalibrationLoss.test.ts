import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { GaussianDiffusion, Training } from "@tinyfusion/diffusion"
import { type Config, Embeddings, Fixtures, Init, StateDict } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as CalibrationLoss from "./CalibrationLoss.ts"

const tiny: Config.Config = Fixtures.tiny

const batch = (n: number) => ({
  latents: Rng.normal(Rng.stream(5, "test/latents"), 0, n * 4 * 4 * 2),
  labels: Int32Array.from({ length: n }, (_, i) => i % 3),
  shape: [n, 4, 4, 2] as const
})

/** Every parameter N(0, 0.3²), so every block changes the output. */
const randomParams = (config: Config.Config) =>
  HostTensor.treeToTensors(ParamTree.unflatten(StateDict.referenceShapes(config).map(([key, shape]) => [
    key,
    HostTensor.float32(
      shape,
      key === "pos_embed"
        ? Embeddings.positionEmbedding(config.hiddenSize, 2)
        : Rng.normal(Rng.stream(1, `test/${key}`), 0, HostTensor.numel(shape)).map((v) => v * 0.3)
    )
  ] as const)))

describe("CalibrationLoss", () => {
  it("the set: fixed draws for a seed, labels as given (no dropout), t in range", () => {
    const ddpm = { _tag: "ddpm", diffusion: GaussianDiffusion.fromBetas(GaussianDiffusion.linearBetas(1000), [], true) } as const
    const a = CalibrationLoss.make(ddpm, tiny, batch(300), 7)
    assert.deepStrictEqual(a, CalibrationLoss.make(ddpm, tiny, batch(300), 7))
    assert.notDeepEqual(a.t, CalibrationLoss.make(ddpm, tiny, batch(300), 8).t)
    assert.deepStrictEqual(Array.from(a.labels), Array.from(batch(300).labels))
    assert.isTrue(a.t.every((t) => Number.isInteger(t) && t >= 0 && t < 1000))
    assert.strictEqual(a.noise.length, 300 * 32)
    assert.throws(() => CalibrationLoss.make(ddpm, tiny, { ...batch(2), shape: [2, 4, 4, 3] }, 0), /do not fit/)
  })

  it.effect("SiT with a zero output: the loss is mean((x − ε)²), hand-computed; the batch size does not matter", () =>
    Effect.gen(function*() {
      const set = CalibrationLoss.make({ _tag: "sit" }, tiny, batch(10), 3)
      // The reference init zeroes the final layer: the velocity prediction is 0, the target x − ε.
      const params = Init.params(tiny, 0)
      let expected = 0
      for (let i = 0; i < set.latents.length; i++) expected += (set.latents[i]! - set.noise[i]!) ** 2
      expected /= set.latents.length
      const whole = yield* CalibrationLoss.evaluate({ _tag: "sit" }, tiny, params, set)
      const small = yield* CalibrationLoss.evaluate({ _tag: "sit" }, tiny, params, set, { batchSize: 3 })
      assert.closeTo(whole, expected, 1e-6 * expected)
      assert.closeTo(small, expected, 1e-6 * expected)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a block-subset model and the gated model with that mask score the same bits; memory flat", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const objective = { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() } as const
      const set = CalibrationLoss.make(objective, tiny, batch(12), 1)
      const params = randomParams(tiny)
      const before = (yield* compute.memory).tensors
      const whole = yield* CalibrationLoss.evaluate(objective, tiny, params, set, { batchSize: 5 })
      const allOn = yield* CalibrationLoss.evaluate(objective, tiny, params, set, { batchSize: 5, mask: [1, 1, 1] })
      const kept = yield* CalibrationLoss.evaluate(objective, tiny, params, set, { batchSize: 5, kept: [0, 2] })
      const gated = yield* CalibrationLoss.evaluate(objective, tiny, params, set, { batchSize: 5, mask: [1, 0, 1] })
      assert.strictEqual(allOn, whole)
      assert.strictEqual(kept, gated)
      assert.notStrictEqual(kept, whole)
      // Against Training.loss on the whole set in one batch.
      const direct = compute.tidy(() => {
        const x = tf.tensor4d(set.latents, [...set.shape])
        return tf.mean(Training.loss(objective, tiny, params, x, { t: set.t, noise: set.noise, labels: set.labels }).perSample).dataSync()[0]!
      })
      assert.closeTo(whole, direct, 1e-5 * Math.abs(direct))
      assert.strictEqual((yield* compute.memory).tensors, before)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})
