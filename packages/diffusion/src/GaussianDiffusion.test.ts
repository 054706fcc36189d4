import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Config, DiT, Fixtures, Init } from "@tinyfusion/models"
import { Compute, type MemoryFigures, ParamTree, Rng, tf, tidy, WebGpuFixture } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import * as Likelihood from "./Likelihood.ts"
import * as Network from "./Network.ts"
import * as Respacing from "./Respacing.ts"

/** DDPM's schedule in float64, from the paper's formulas rather than the module's tables. */
const reference = (() => {
  const beta = Array.from({ length: 1000 }, (_, i) => 1e-4 + (i * (0.02 - 1e-4)) / 999)
  const alphaBar: Array<number> = []
  beta.reduce((acc, b, i) => (alphaBar[i] = acc * (1 - b)), 1)
  const prev = (t: number) => (t === 0 ? 1 : alphaBar[t - 1]!)
  const tildeBeta = (t: number) => ((1 - prev(t)) / (1 - alphaBar[t]!)) * beta[t]!
  return { beta, alphaBar, prev, tildeBeta }
})()

/** DDPM over 100 respaced steps with a guided one-block DiT: memory as each step calls the network. */
const hundredSamplingSteps = Effect.gen(function*() {
  const compute = yield* Compute
  const config: Config.Config = { ...Fixtures.tiny, hiddenSize: 8, depth: 1 }
  const params = Init.params(config, 0)
  const d = yield* GaussianDiffusion.make({ respacing: "100", learnSigma: true })
  const labels = [0, 1]
  const guided = Network.denoiser((x, t, y) => DiT.infer(config, params, { x, t, y }), labels, {
    scale: 1.5,
    nullClass: Config.nullClass(config),
    channels: "all",
    inChannels: config.inChannels
  })
  const seen: Array<MemoryFigures> = []
  const denoiser: Network.Denoiser = (x, t) => {
    seen.push(Effect.runSync(compute.memory))
    return guided(x, t)
  }
  const xT = Rng.normalTensor(Rng.stream(0, "test/x_T"), 0, [2, 4, 4, 2]) as tf.Tensor4D
  const x0 = GaussianDiffusion.ddpmSample(d, denoiser, xT, { noise: Rng.stream(0, "test/noise") })
  yield* compute.read(x0)
  tf.dispose([x0, xT])
  ParamTree.dispose(params)
  return seen
})

const assertFlat = (seen: ReadonlyArray<MemoryFigures>) => {
  assert.strictEqual(seen.length, 100)
  // From the second step on, the chain's current x is one more tensor than x_T alone.
  seen.slice(1).forEach((m, i) => assert.deepStrictEqual([m.tensors, m.bytes], [seen[1]!.tensors, seen[1]!.bytes], `step ${i + 1}`))
  // The device's allocation (wasm's heap; webgpu's buffers, with those tfjs pools for reuse) never passes the
  // peak of the first 50 steps: on webgpu it cycles with the batching of submissions, and does not grow.
  const peak = (ms: ReadonlyArray<MemoryFigures>) => Math.max(...ms.map((m) => m.deviceBytes!))
  assert.isAbove(peak(seen.slice(0, 50)), 0)
  assert.isAtMost(peak(seen.slice(50)), peak(seen.slice(0, 50)))
}

const values = (t: tf.Tensor) => Array.from(t.dataSync())
const shape: [number, number, number, number] = [4, 2, 2, 3]
const n = 4 * 2 * 2 * 3
const perSample = n / 4
const steps = [0, 1, 500, 999]
const draw = (name: string) => Rng.normal(Rng.stream(0, `test/${name}`), 0, n)

describe("GaussianDiffusion", () => {
  it.effect("the linear schedule's tables match DDPM's formulas in float64", () =>
    Effect.gen(function*() {
      const d = yield* GaussianDiffusion.make()
      assert.strictEqual(d.numTimesteps, 1000)
      const base = GaussianDiffusion.linearBetas(1000)
      assert.strictEqual(base[0], 1e-4)
      assert.strictEqual(base[999], 0.02)
      // DiT always builds a SpacedDiffusion, whose betas are 1 − ᾱ_t/ᾱ_{t−1} even when every step is kept.
      assert.strictEqual(d.betas[0], 1 - (1 - 1e-4))
      for (const t of [0, 1, 2, 250, 998, 999]) {
        assert.closeTo(base[t]!, reference.beta[t]!, 1e-17)
        assert.closeTo(d.betas[t]! / reference.beta[t]!, 1, 1e-10)
        assert.closeTo(d.alphasCumprod[t]! / reference.alphaBar[t]!, 1, 1e-13)
        if (t > 0) assert.closeTo(d.posteriorVariance[t]! / reference.tildeBeta(t), 1, 1e-10)
      }
      assert.strictEqual(d.posteriorVariance[0], 0)
      assert.strictEqual(d.posteriorLogVarianceClipped[0], Math.log(d.posteriorVariance[1]!))
      assert.deepStrictEqual(d.timestepMap, Array.from({ length: 1000 }, (_, i) => i))
    }))

  it.effect("q_sample and the posterior mean and variance against float64 formulas", () =>
    Effect.gen(function*() {
      const d = yield* GaussianDiffusion.make()
      const [x0, eps, xt] = [draw("x0"), draw("eps"), draw("xt")]
      const sampled = values(tidy(() => GaussianDiffusion.qSample(d, tf.tensor4d(x0, shape), steps, tf.tensor4d(eps, shape))))
      const posterior = tidy(() => GaussianDiffusion.qPosterior(d, tf.tensor4d(x0, shape), tf.tensor4d(xt, shape), steps))
      const mean = values(posterior.mean)
      const variance = values(posterior.variance)
      const logVariance = values(posterior.logVariance)
      steps.forEach((t, b) => {
        const ab = reference.alphaBar[t]!
        const coef1 = (Math.sqrt(reference.prev(t)) * reference.beta[t]!) / (1 - ab)
        const coef2 = (Math.sqrt(1 - reference.beta[t]!) * (1 - reference.prev(t))) / (1 - ab)
        for (let i = b * perSample; i < (b + 1) * perSample; i++) {
          assert.closeTo(sampled[i]!, Math.sqrt(ab) * x0[i]! + Math.sqrt(1 - ab) * eps[i]!, 1e-6)
          assert.closeTo(mean[i]!, coef1 * x0[i]! + coef2 * xt[i]!, 1e-5)
        }
        assert.closeTo(variance[b]! / Math.max(reference.tildeBeta(t), 1e-30), t === 0 ? 0 : 1, 1e-6)
        assert.closeTo(logVariance[b]!, Math.log(reference.tildeBeta(t === 0 ? 1 : t)), 1e-5)
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("p(x_{t−1}|x_t) with the true ε is DDPM's μ = (x_t − β_t/√(1−ᾱ_t)·ε)/√α_t; v interpolates log β̃ … log β", () =>
    Effect.gen(function*() {
      const d = yield* GaussianDiffusion.make()
      const [x0, eps] = [draw("x0"), draw("eps")]
      const v = Rng.uniform(Rng.stream(0, "test/v"), 0, n).map((u) => 2 * u - 1)
      const out = tidy(() => {
        const xt = GaussianDiffusion.qSample(d, tf.tensor4d(x0, shape), steps, tf.tensor4d(eps, shape))
        const output = tf.concat([tf.tensor4d(eps, shape), tf.tensor4d(v, shape)], 3) as tf.Tensor4D
        return { xt, ...GaussianDiffusion.pMeanVariance(d, output, xt, steps) }
      })
      const [xt, mean, logVariance, x0hat] = [values(out.xt), values(out.mean), values(out.logVariance), values(out.predXstart)]
      steps.forEach((t, b) => {
        const [beta, ab] = [reference.beta[t]!, reference.alphaBar[t]!]
        for (let i = b * perSample; i < (b + 1) * perSample; i++) {
          assert.closeTo(x0hat[i]!, x0[i]!, t === 999 ? 2e-3 : 1e-4)
          assert.closeTo(mean[i]!, (xt[i]! - (beta / Math.sqrt(1 - ab)) * eps[i]!) / Math.sqrt(1 - beta), 1e-4)
          const frac = (v[i]! + 1) / 2
          assert.closeTo(logVariance[i]!, frac * Math.log(beta) + (1 - frac) * Math.log(reference.tildeBeta(t === 0 ? 1 : t)), 1e-4)
        }
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("vb: identical distributions give 0; v = 1 gives the KL of β against β̃; t = 0 gives the decoder NLL", () =>
    Effect.gen(function*() {
      const d = yield* GaussianDiffusion.make()
      const m = tf.tensor4d(draw("m"), shape)
      const lv = tf.tensor4d(draw("lv"), shape)
      assert.isTrue(values(Likelihood.normalKl(m, lv, m, lv)).every((x) => x === 0))
      const [x0, eps] = [draw("x0"), draw("eps")]
      const t = [3, 10, 500, 999]
      const vb = (vValue: number, ts: ReadonlyArray<number>) =>
        values(tidy(() => {
          const x = tf.tensor4d(x0, shape)
          const xt = GaussianDiffusion.qSample(d, x, ts, tf.tensor4d(eps, shape))
          const output = tf.concat([tf.tensor4d(eps, shape), tf.fill([...shape], vValue)], 3) as tf.Tensor4D
          return GaussianDiffusion.vbTerms(d, output, x, xt, ts)
        }))
      for (const kl of vb(-1, t)) assert.closeTo(kl, 0, 1e-4)
      vb(1, t).forEach((kl, b) => {
        const [beta, tilde] = [reference.beta[t[b]!]!, reference.tildeBeta(t[b]!)]
        // Equal means: KL = ½(−1 + log β − log β̃ + β̃/β), in bits.
        assert.closeTo(kl, (0.5 * (-1 + Math.log(beta) - Math.log(tilde) + tilde / beta)) / Math.LN2, 2e-3)
      })
      // At t = 0 the term is −log of the bin mass under N(x̂_0-mean, β̃_1) (v = −1), averaged, in bits.
      const atZero = vb(-1, [0, 0, 0, 0])
      const sigma = Math.sqrt(reference.tildeBeta(1))
      const cdf = (z: number) => 0.5 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3)))
      atZero.forEach((nll, b) => {
        let sum = 0
        for (let i = b * perSample; i < (b + 1) * perSample; i++) {
          const x = x0[i]!
          const p = x < -0.999 ? cdf((1 / 255) / sigma) : x > 0.999 ? 1 - cdf((-1 / 255) / sigma) : cdf((1 / 255) / sigma) - cdf((-1 / 255) / sigma)
          sum += -Math.log(Math.max(p, 1e-12))
        }
        assert.closeTo(nll, sum / perSample / Math.LN2, 2e-2)
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("training loss = mse + vb; vb's gradient reaches only v (the mean is stop-gradiented), mse's only ε", () =>
    Effect.gen(function*() {
      const d = yield* GaussianDiffusion.make()
      const [x0, eps] = [tf.tensor4d(draw("x0"), shape), tf.tensor4d(draw("eps"), shape)]
      const output = tf.concat([tf.tensor4d(draw("out-eps"), shape), tf.tensor4d(draw("out-v"), shape).tanh()], 3) as tf.Tensor4D
      const term = (pick: (l: GaussianDiffusion.Losses) => tf.Tensor) => (o: tf.Tensor) =>
        tf.sum(pick(GaussianDiffusion.trainingLosses(d, () => o as tf.Tensor4D, x0, steps, eps)))
      const halves = (g: tf.Tensor) => (tf.split(g, 2, 3) as Array<tf.Tensor>).map((h) => values(h))
      const [vbEps, vbV] = halves(tf.grad(term((l) => l.vb!))(output))
      const [mseEps, mseV] = halves(tf.grad(term((l) => l.mse))(output))
      assert.isTrue(vbEps!.every((g) => g === 0))
      assert.isTrue(vbV!.some((g) => Math.abs(g) > 1e-4))
      assert.isTrue(mseV!.every((g) => g === 0))
      assert.isTrue(mseEps!.some((g) => Math.abs(g) > 1e-4))
      const losses = tidy(() => GaussianDiffusion.trainingLosses(d, () => output, x0, steps, eps))
      const [loss, mse, vb] = [values(losses.loss), values(losses.mse), values(losses.vb!)]
      loss.forEach((l, b) => assert.closeTo(l, mse[b]! + vb[b]!, 1e-5))
      // mse is mean((ε − ε̂)²) per sample.
      const e = draw("eps")
      const hat = draw("out-eps")
      mse.forEach((m, b) => {
        let sum = 0
        for (let i = b * perSample; i < (b + 1) * perSample; i++) sum += (e[i]! - hat[i]!) ** 2
        assert.closeTo(m, sum / perSample, 1e-5)
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("discretised Gaussian log-likelihood: bin mass inside, tails at the edges, far tails to float64's digits", () =>
    Effect.gen(function*() {
      // The last two bins lie 5σ above and below the mean: masses of 4e-8, which Φ̃(b) − Φ̃(a) near 1 loses in float32.
      const xs = [-1, -0.5, 0, 0.3, 1, 0.5, -0.5]
      const means = [-0.9, -0.49, 0.1, 0.3, 0.95, 0, 0]
      const logScales = [-1, -3, -2, -4, -0.5, Math.log(0.1), Math.log(0.1)]
      const got = values(Likelihood.discretizedGaussianLogLikelihood(tf.tensor1d(xs), tf.tensor1d(means), tf.tensor1d(logScales)))
      const cdf = (z: number) => 0.5 * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3)))
      xs.forEach((x, i) => {
        const inv = Math.exp(-logScales[i]!)
        const plus = cdf(inv * (x - means[i]! + 1 / 255))
        const minus = cdf(inv * (x - means[i]! - 1 / 255))
        const expected = x < -0.999 ? Math.log(plus) : x > 0.999 ? Math.log(1 - minus) : Math.log(Math.max(plus - minus, 1e-12))
        assert.closeTo(got[i]!, expected, 1e-4 * Math.max(1, Math.abs(expected)))
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("respacing: Python's rounding, sections, ddim strides; respaced betas reproduce ᾱ at the kept steps", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(Respacing.spaceTimesteps(10, "4"), [0, 3, 6, 9])
      // 4.5 rounds to 4 (half to even), as Python does.
      assert.deepStrictEqual(Respacing.spaceTimesteps(10, "3"), [0, 4, 9])
      assert.deepStrictEqual(Respacing.spaceTimesteps(30, "2,3,4"), [0, 9, 10, 14, 19, 20, 23, 26, 29])
      assert.deepStrictEqual(Respacing.spaceTimesteps(1000, "ddim3"), [0, 334, 668])
      assert.deepStrictEqual(Respacing.pythonRound(2.5), 2)
      assert.deepStrictEqual(Respacing.pythonRound(3.5), 4)
      assert.throws(() => Respacing.spaceTimesteps(10, "20"), /cannot divide a section of 10 steps into 20/)
      assert.throws(() => Respacing.spaceTimesteps(10, "ddim7"), /exactly 7 steps/)
      assert.throws(() => Respacing.spaceTimesteps(10, "fast"), /comma-separated counts/)
      assert.throws(() => Respacing.spaceTimesteps(10, "0"), /"0": keeps no timestep/)
      assert.throws(() => Respacing.spaceTimesteps(10, "0,0"), /keeps no timestep/)
      const bad = yield* Effect.flip(GaussianDiffusion.make({ respacing: "ddimx" }))
      assert.strictEqual(bad._tag, "InvalidRespacing")

      const full = yield* GaussianDiffusion.make()
      for (const respacing of ["250", "64", "ddim50", "10,15,20"]) {
        const d = yield* GaussianDiffusion.make({ respacing })
        assert.strictEqual(d.numTimesteps, d.timestepMap.length)
        assert.strictEqual(d.timestepMap[0], 0)
        let alphaBar = 1
        d.betas.forEach((b, k) => {
          alphaBar *= 1 - b
          assert.closeTo(alphaBar / reference.alphaBar[d.timestepMap[k]!]!, 1, 1e-12)
          assert.closeTo(d.alphasCumprod[k]! / full.alphasCumprod[d.timestepMap[k]!]!, 1, 1e-12)
        })
      }
      const d250 = yield* GaussianDiffusion.make({ respacing: "250" })
      assert.strictEqual(d250.numTimesteps, 250)
      assert.strictEqual(d250.timestepMap[249], 999)
    }))

  it.effect("DDPM and DDIM sampling with the ideal ε of a point mass end on that point", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const target = 0.37
      const full = yield* GaussianDiffusion.make()
      for (const respacing of ["", "50"]) {
        const d = yield* GaussianDiffusion.make({ respacing })
        // For data ≡ c, ε̂(x_t) = (x_t − √ᾱ_t·c)/√(1 − ᾱ_t) (the network sees original steps); v = −1.
        const denoiser = (x: tf.Tensor4D, t: ReadonlyArray<number>) => {
          const ab = (original: number) => full.alphasCumprod[original]!
          const sqrtAb = tf.tensor4d(t.map((ti) => Math.sqrt(ab(ti))), [t.length, 1, 1, 1])
          const sqrt1m = tf.tensor4d(t.map((ti) => Math.sqrt(1 - ab(ti))), [t.length, 1, 1, 1])
          const eps = tf.div(tf.sub(x, tf.mul(sqrtAb, target)), sqrt1m)
          return tf.concat([eps, tf.fill(x.shape, -1)], 3) as tf.Tensor4D
        }
        const xT = tf.tensor4d(draw("xT"), shape)
        const before = (yield* compute.memory).tensors
        const ddpm = GaussianDiffusion.ddpmSample(d, denoiser, xT, { noise: Rng.stream(0, "test/ddpm") })
        const ddim = GaussianDiffusion.ddimSample(d, denoiser, xT, { noise: Rng.stream(0, "test/ddim"), eta: 1 })
        for (const x of [...values(ddpm), ...values(ddim)]) assert.closeTo(x, target, 1e-3)
        tf.dispose([ddpm, ddim])
        assert.strictEqual((yield* compute.memory).tensors, before)
        xT.dispose()
      }
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("guided DDPM over 100 steps: every step releases what the one before made; the device's allocation stays flat", () =>
    hundredSamplingSteps.pipe(Effect.map(assertFlat), Effect.provide(Compute.wasm)), 60_000)

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("guided DDPM over 100 steps releases its GPU buffers: tensors, bytes and the device's allocation flat", () =>
      hundredSamplingSteps.pipe(Effect.map(assertFlat), Effect.provide(Compute.webgpu)), 300_000)
  })
})
