import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Fixtures, Mar, type MarConfig, MarReference, MarStateDict } from "@tinyfusion/models"
import { AdamW, Compute, HostTensor, ParamTree, Rng, tf, tidy, WebGpuFixture } from "@tinyfusion/tensor"
import * as DiffLoss from "./DiffLoss.ts"
import * as MarTraining from "./MarTraining.ts"
import * as Training from "./Training.ts"

const maxDiff = (got: ArrayLike<number>, expected: ArrayLike<number>) => {
  assert.strictEqual(got.length, expected.length)
  let worst = 0
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!))
  return worst
}

/** The fixture's batch as MAR draws: orders whose first two tokens are the fixture's masked ones, its timesteps and noise. */
const fixtureDraws = (fixture: Effect.Success<typeof MarReference.load>): MarTraining.Draws => ({
  t: Array.from(fixture.tensor("in.steps").data),
  noise: fixture.tensor("in.noise").data as Float32Array,
  labels: Int32Array.from(fixture.tensor("in.labels").data),
  // mask [[1,0,1,0],[0,1,1,0],[1,1,0,0]]
  orders: Int32Array.from([0, 2, 1, 3, 1, 2, 0, 3, 0, 1, 2, 3]),
  masked: 2,
  at: { seed: 0, step: 0, purpose: "test" }
})

const latentsOf = (fixture: Effect.Success<typeof MarReference.load>) => {
  const l = fixture.tensor("in.latents")
  return tf.tensor4d(l.data, l.shape as [number, number, number, number])
}

/** MAR's loss rows, its masked loss and the guided head on the reference fixture, on the layer's backend, against PyTorch's float64 values. */
const lossParity = Effect.gen(function*() {
  const compute = yield* Compute
  const fixture = yield* MarReference.load
  const config = fixture.config
  const diffloss = yield* DiffLoss.make(config.numSamplingSteps)
  const params = HostTensor.treeToTensors(fixture.params)
  const d = fixtureDraws(fixture)
  const terms = tidy(() => MarTraining.loss(diffloss, config, params, latentsOf(fixture), d))
  const perRow = yield* compute.read(terms.perRow)
  const expected = fixture.exact("out.loss")
  assert.isBelow(maxDiff(perRow, expected), 1e-4 * Math.max(...expected), "loss per row")
  const loss = (yield* compute.read(terms.loss))[0]!
  const reference = fixture.exact("out.masked_loss")[0]!
  assert.isBelow(Math.abs(loss - reference), 1e-5 * reference, `masked loss ${loss} vs ${reference}`)

  // forward_with_cfg at 2.5 on the first half of the rows, conditions [z rows; the next z rows].
  const zRows = tf.tile(tf.tensor2d(Float32Array.from(fixture.exact("out.z")), [12, 12]), [2, 1]) as tf.Tensor2D
  const xt = tf.tensor2d(fixture.tensor("in.x_t").data, [24, 8])
  const guided = tidy(() => DiffLoss.guided((x, t) => Mar.head(params, x, t, zRows), 2.5)(tf.slice(xt, [0, 0], [12, 8]), d.t.slice(0, 12)))
  const cfg = fixture.exact("out.head_cfg").slice(0, 12 * 16)
  assert.isBelow(maxDiff(yield* compute.read(guided), cfg), 1e-4 * Math.max(...cfg.map(Math.abs)), "guided head")
  ParamTree.dispose(params)
})

describe("MAR training", () => {
  it.effect("DiffLoss's cosine schedules and the respaced generation steps are the reference's", () =>
    Effect.gen(function*() {
      const fixture = yield* MarReference.load
      const d = yield* DiffLoss.make(fixture.config.numSamplingSteps)
      assert.isBelow(maxDiff(d.train.betas, fixture.exact("out.train_betas")), 1e-15)
      assert.isBelow(maxDiff(d.generate.betas, fixture.exact("out.gen_betas")), 1e-15)
      assert.deepStrictEqual(d.generate.timestepMap, Array.from(fixture.tensor("out.gen_timestep_map").data))
      assert.strictEqual(d.train.betas[999], 0.999)
    }))

  it.effect("the loss rows, the masked loss and guided head outputs equal the reference (PyTorch, float64)", () => lossParity.pipe(Effect.provide(Compute.wasm)))

  it.effect("the masked loss ignores exactly the unmasked tokens' rows", () =>
    Effect.gen(function*() {
      const fixture = yield* MarReference.load
      const config = fixture.config
      const diffloss = yield* DiffLoss.make(config.numSamplingSteps)
      const params = HostTensor.treeToTensors(fixture.params)
      const d = fixtureDraws(fixture)
      const run = (noise: Float32Array) => tidy(() => {
        const out = MarTraining.loss(diffloss, config, params, latentsOf(fixture), { ...d, noise })
        return { loss: out.loss.dataSync()[0]!, perRow: out.perRow.dataSync(), mask: out.mask.dataSync() }
      })
      const base = run(d.noise)
      // Rows are (repeat, sample, token); the fixture masks 6 of 12 tokens, so 12 of 24 rows.
      assert.deepStrictEqual(Array.from(base.mask), [...Array.from(fixture.tensor("in.mask").data), ...Array.from(fixture.tensor("in.mask").data)])
      const masked = Array.from(base.mask).reduce((s, m) => s + m, 0)
      assert.strictEqual(masked, 12)
      const mean = Array.from(base.perRow).reduce((s, l, i) => s + l * base.mask[i]!, 0) / masked
      assert.approximately(base.loss, mean, 1e-6 * mean)
      // New noise on every unmasked row: those rows' losses change, the loss keeps every bit.
      const unmasked = Float32Array.from(d.noise, (v, k) => (base.mask[Math.floor(k / 8)] === 0 ? v + 3 : v))
      const moved = run(unmasked)
      base.perRow.forEach((l, i) => (base.mask[i] === 0 ? assert.notStrictEqual(moved.perRow[i], l) : assert.strictEqual(moved.perRow[i], l)))
      assert.strictEqual(moved.loss, base.loss)
      // New noise on one masked row changes it.
      const row = base.mask.indexOf(1)
      const one = run(Float32Array.from(d.noise, (v, k) => (Math.floor(k / 8) === row ? v + 3 : v)))
      assert.notStrictEqual(one.loss, base.loss)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it("draws: the masking ratio is the reference's truncated normal; ⌈T·ratio⌉ of each order masked; labels dropped with p", () => {
    // scipy.stats.truncnorm((0.7 − 1)/0.25, 0, loc=1, scale=0.25).ppf(q)
    const scipy = [[0.001, 0.7004949808094212], [0.25, 0.7995222770934403], [0.5, 0.8742874762745441], [0.9, 0.9758405176194248], [0.999, 0.999758780650475]]
    for (const [q, ppf] of scipy) assert.approximately(MarTraining.maskRatio(0.7, q!), ppf!, 2e-7, `q ${q}`)
    const config: MarConfig.MarConfig = { ...Fixtures.mar, labelDropProb: 0.1 }
    const labels = Array.from({ length: 2000 }, (_, i) => i % 3)
    const a = MarTraining.draws(config, labels, { seed: 1, step: 5 })
    assert.deepStrictEqual(a, MarTraining.draws(config, labels, { seed: 1, step: 5 }))
    assert.strictEqual(a.t.length, 2000 * 4 * config.diffusionBatchMul)
    assert.strictEqual(a.noise.length, a.t.length * 8)
    for (let b = 0; b < 2000; b++) assert.deepStrictEqual([...a.orders.slice(4 * b, 4 * b + 4)].sort(), [0, 1, 2, 3])
    assert.closeTo(a.labels.filter((y) => y === 3).length / 2000, 0.1, 0.02)
    // Over many steps: ratios within [0.7, 1], mean that of the truncated normal (0.8670 ± 4 standard errors, σ 0.0835).
    const ratios = Array.from({ length: 20000 }, (_, step) => MarTraining.maskRatio(0.7, Rng.uniform(Rng.stream(1, "train/mask-ratio"), step, 1)[0]!))
    assert.isTrue(ratios.every((r) => r >= 0.7 && r <= 1))
    assert.closeTo(ratios.reduce((s, r) => s + r, 0) / ratios.length, 0.8670173473105165, (4 * 0.0835) / Math.sqrt(20000))
    assert.strictEqual(a.masked, Math.ceil(4 * ratios[5]!))
  })

  it.effect("a tiny MAR overfits a fixed batch: the loss falls 10× in 150 steps", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const config: MarConfig.MarConfig = { ...Fixtures.mar, attnDropout: 0, projDropout: 0, encoderEmbedDim: 32, decoderEmbedDim: 32, difflossWidth: 32 }
      const diffloss = yield* DiffLoss.make("10")
      const x = tf.tensor4d(Rng.uniform(Rng.stream(0, "test/batch"), 0, 4 * 32).map((u) => 2 * u - 1), [4, 4, 4, 2])
      const d = MarTraining.draws(config, [0, 1, 2, 1], { seed: 1, step: 0 })
      const hyper: Training.Hyper = { optimiser: AdamW.single(2e-3), emaDecay: 0.99, maxGradNorm: 3 }
      let state = Training.init(HostTensor.treeToTensors(MarStateDict.init(config, 0)))
      const losses: Array<number> = []
      for (let i = 0; i < 150; i++) {
        const next = Training.step(hyper, state, (p) => MarTraining.loss(diffloss, config, p, x, d).loss)
        Training.dispose(state)
        state = next.state
        losses.push((yield* compute.read(next.loss))[0]!)
        tf.dispose([next.loss, next.gradNorm])
      }
      Training.dispose(state)
      x.dispose()
      const last = Math.min(...losses.slice(-10))
      assert.isBelow(last, losses[0]! / 10, `loss ${losses[0]} → ${last}`)
    }).pipe(Effect.provide(Compute.wasm)), { timeout: 120_000 })

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("the loss rows, the masked loss and guided head outputs equal the reference there too", () =>
      lossParity.pipe(Effect.provide(Compute.webgpu)), 60_000)
  })
})
