import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type Config, Fixtures, Init } from "@tinyfusion/models"
import { AdamW, Compute, HostTensor, ParamTree, Rng, tf, WebGpuFixture } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import * as Training from "./Training.ts"

const tiny: Config.Config = { ...Fixtures.tiny, hiddenSize: 32, depth: 2, mlpRatio: 4 }

const hyper: Training.Hyper = { optimiser: AdamW.single(1e-3), emaDecay: 0.99, maxGradNorm: 1 }

/** A fixed batch of 4 latents in [−1, 1] with a class each. */
const batch = () => ({
  x: tf.tensor4d(Rng.uniform(Rng.stream(0, "test/batch"), 0, 4 * 4 * 4 * 2).map((u) => 2 * u - 1), [4, 4, 4, 2]),
  labels: [0, 1, 2, 1]
})

/** The smallest DiT: one block 8 wide, 4 tokens (what a step costs on lavapipe is its ~800 kernel launches). */
const smallest: Config.Config = { ...Fixtures.tiny, hiddenSize: 8, depth: 1 }

/** 100 training steps: memory before, and after each step once its loss is read. */
const hundredSteps = Effect.gen(function*() {
  const compute = yield* Compute
  const objective = { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() } as const
  const { x, labels } = batch()
  let state = Training.init(Init.params(smallest, 0))
  const before = yield* compute.memory
  const after: Array<{ readonly tensors: number; readonly bytes: number; readonly deviceBytes: number | undefined }> = []
  for (let i = 0; i < 100; i++) {
    const next = Training.trainStep(objective, smallest, hyper, state, { x, labels }, { seed: 0, step: i })
    yield* compute.read(next.loss)
    Training.dispose(state)
    tf.dispose([next.loss, next.gradNorm])
    state = next.state
    after.push(yield* compute.memory)
  }
  Training.dispose(state)
  x.dispose()
  return { before, after }
})

const assertFlat = ({ before, after }: Effect.Success<typeof hundredSteps>) => {
  after.forEach((m, i) => assert.deepStrictEqual([m.tensors, m.bytes], [before.tensors, before.bytes], `after step ${i}`))
  // The device's allocation (wasm's heap; webgpu's buffers, with those tfjs pools for reuse) never passes the
  // peak of the first 50 steps.
  const peak = (ms: ReadonlyArray<{ readonly deviceBytes: number | undefined }>) => Math.max(...ms.map((m) => m.deviceBytes!))
  assert.isAbove(peak(after.slice(0, 50)), 0)
  assert.isAtMost(peak(after.slice(50)), peak(after.slice(0, 50)))
}

/** Trains on one batch with the draws of step 0 repeated; the losses at every step. */
const overfit = (objective: Training.Objective, steps: number) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const { x, labels } = batch()
    let state = Training.init(Init.params(tiny, 0))
    const losses: Array<number> = []
    for (let i = 0; i < steps; i++) {
      const next = Training.trainStep(objective, tiny, hyper, state, { x, labels }, { seed: 1, step: 0 })
      Training.dispose(state)
      state = next.state
      losses.push((yield* compute.read(next.loss))[0]!)
      tf.dispose([next.loss, next.gradNorm])
    }
    Training.dispose(state)
    x.dispose()
    return losses
  })

describe("Training", () => {
  it("draws: the same numbers for the same (seed, step), labels dropped to the null class with p", () => {
    const d = GaussianDiffusion.fromBetas(GaussianDiffusion.linearBetas(1000), [], true)
    const objective = { _tag: "ddpm", diffusion: d } as const
    const labels = Array.from({ length: 4000 }, (_, i) => i % 3)
    const a = Training.draws(objective, tiny, labels, { seed: 3, step: 7 })
    const b = Training.draws(objective, tiny, labels, { seed: 3, step: 7 })
    const c = Training.draws(objective, tiny, labels, { seed: 3, step: 8 })
    assert.deepStrictEqual(a, b)
    assert.notDeepEqual(a.t, c.t)
    assert.strictEqual(a.noise.length, 4000 * 32)
    assert.isTrue(a.t.every((t) => Number.isInteger(t) && t >= 0 && t < 1000))
    const dropped = a.labels.filter((y) => y === 3).length
    assert.closeTo(dropped / 4000, 0.1, 0.015)
    a.labels.forEach((y, i) => assert.isTrue(y === 3 || y === labels[i]))
    const sit = Training.draws({ _tag: "sit" }, tiny, labels.slice(0, 100), { seed: 3, step: 7 })
    assert.isTrue(sit.t.every((t) => t > 0 && t < 1))
  })

  it.effect("a step: pos_embed untouched, EMA = decay·ema + (1 − decay)·params, memory flat", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const objective = { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() } as const
      const { x, labels } = batch()
      const host = Init.host(tiny, 2)
      let state = Training.init(HostTensor.treeToTensors(host))
      const before = (yield* compute.memory).tensors
      for (let i = 0; i < 3; i++) {
        const next = Training.trainStep(objective, tiny, hyper, state, { x, labels }, { seed: 0, step: i })
        if (i === 2) {
          const flat = (tree: ParamTree.ParamTree) => new Map(ParamTree.flattenTensors(tree))
          const [ema0, p1, ema1] = [flat(state.ema), flat(next.state.params), flat(next.state.ema)]
          for (const key of ["blocks.1.attn.qkv.weight", "final_layer.linear.bias"]) {
            const expected = ema0.get(key)!.dataSync().map((e, j) => 0.99 * e + 0.01 * p1.get(key)!.dataSync()[j]!)
            ema1.get(key)!.dataSync().forEach((v, j) => assert.closeTo(v, expected[j]!, 1e-6))
          }
          assert.deepStrictEqual(p1.get("pos_embed")!.dataSync(), new Map(ParamTree.flatten(host, HostTensor.isHostTensor)).get("pos_embed")!.data)
          assert.isAbove((yield* compute.read(next.gradNorm))[0]!, 0)
        }
        Training.dispose(state)
        state = next.state
        tf.dispose([next.loss, next.gradNorm])
        assert.strictEqual((yield* compute.memory).tensors, before)
      }
      Training.dispose(state)
      x.dispose()
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("step on any tree (no pos_embed): the first AdamW step moves each weight by lr against its gradient", () =>
    Effect.gen(function*() {
      const state = Training.init({ w: tf.tensor1d([1, -2, 0.5]) })
      const target = tf.tensor1d([0, 0, 1])
      // L = Σ(w − target)²: gradient (2, −4, −1), global norm √21.
      const next = Training.step({ optimiser: AdamW.single(0.1), emaDecay: 0.9 }, state, (p) =>
        tf.sum(tf.square(tf.sub((p as { w: tf.Tensor }).w, target))) as tf.Scalar)
      const w = Array.from((next.state.params as { w: tf.Tensor }).w.dataSync())
      ;[0.9, -1.9, 0.6].forEach((v, i) => assert.closeTo(w[i]!, v, 1e-6))
      const ema = Array.from((next.state.ema as { w: tf.Tensor }).w.dataSync())
      ;[1, -2, 0.5].forEach((v, i) => assert.closeTo(ema[i]!, 0.9 * v + 0.1 * w[i]!, 1e-6))
      assert.closeTo(next.gradNorm.dataSync()[0]!, Math.sqrt(21), 1e-5)
      assert.closeTo(next.loss.dataSync()[0]!, 1 + 4 + 0.25, 1e-6)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a tiny DiT overfits a fixed batch: the diffusion loss falls 10× in 150 steps", () =>
    Effect.gen(function*() {
      const losses = yield* overfit({ _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() }, 150)
      const last = Math.min(...losses.slice(-10))
      assert.isBelow(last, losses[0]! / 10, `loss ${losses[0]} → ${last}`)
    }).pipe(Effect.provide(Compute.wasm)), 60_000)

  it.effect("the same network as SiT overfits a fixed batch: the velocity loss falls 10× in 150 steps", () =>
    Effect.gen(function*() {
      const losses = yield* overfit({ _tag: "sit" }, 150)
      const last = Math.min(...losses.slice(-10))
      assert.isBelow(last, losses[0]! / 10, `loss ${losses[0]} → ${last}`)
    }).pipe(Effect.provide(Compute.wasm)), 60_000)

  it.effect("100 steps release every tensor; the device's allocation stays flat", () =>
    hundredSteps.pipe(Effect.map(assertFlat), Effect.provide(Compute.wasm)), 60_000)

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("100 steps release their GPU buffers: tensors, bytes and the device's allocation flat", () =>
      hundredSteps.pipe(Effect.map(assertFlat), Effect.provide(Compute.webgpu)), 300_000)

    it.effect("a step over 2,048 tokens (weight gradients tfjs would split with float atomics) gives the same bits twice", () =>
      Effect.gen(function*() {
        const compute = yield* Compute
        const objective = { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() } as const
        // 512 latents of 4 tokens: every Linear's weight gradient sums over 2,048 rows.
        const x = tf.tensor4d(Rng.uniform(Rng.stream(0, "test/large-batch"), 0, 512 * 4 * 4 * 2).map((u) => 2 * u - 1), [512, 4, 4, 2])
        const labels = Array.from({ length: 512 }, (_, i) => i % 3)
        const start = Training.init(Init.params(smallest, 0))
        const bits: Array<Array<string>> = []
        for (let run = 0; run < 2; run++) {
          const next = Training.trainStep(objective, smallest, hyper, start, { x, labels }, { seed: 0, step: 3 })
          const leaves = ParamTree.flattenTensors(next.state.params)
          const read: Array<string> = []
          for (const [key, t] of leaves) read.push(`${key} ${Buffer.from((yield* compute.read(t)).buffer).toString("base64")}`)
          bits.push(read)
          Training.dispose(next.state)
          tf.dispose([next.loss, next.gradNorm])
        }
        assert.deepStrictEqual(bits[1], bits[0])
        Training.dispose(start)
        x.dispose()
      }).pipe(Effect.provide(Compute.webgpu)), 120_000)
  })
})
