import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng, tf, tidy } from "@tinyfusion/tensor"
import * as Network from "./Network.ts"
import * as Transport from "./Transport.ts"

const values = (t: tf.Tensor) => Array.from(t.dataSync())

/**
 * Data N(μ, s²) per element: the linear path's marginal at t is
 * N(t·μ, σ_t²) with σ_t² = t²s² + (1−t)², and the exact velocity field is
 * v(x, t) = E[x_1 − ε | x_t] = μ + (t·s² − (1−t))/σ_t²·(x − t·μ).
 * Its flow carries z at t = 0 to μ + s·z at t = 1.
 */
const [mu, s] = [0.5, 0.3]
const gaussianVelocity: Network.Denoiser = (x, t) => {
  const col = (f: (ti: number) => number) => tf.tensor4d(t.map(f), [t.length, 1, 1, 1])
  const gain = col((ti) => (ti * s * s - (1 - ti)) / (ti * ti * s * s + (1 - ti) ** 2))
  return tf.add(mu, tf.mul(gain, tf.sub(x, col((ti) => ti * mu)))) as tf.Tensor4D
}

describe("Transport (SiT)", () => {
  it.effect("linear interpolant and the velocity loss in closed form", () =>
    Effect.gen(function*() {
      const shape: [number, number, number, number] = [2, 2, 2, 1]
      const x1 = Rng.normal(Rng.stream(0, "test/x1"), 0, 8)
      const eps = Rng.normal(Rng.stream(0, "test/eps"), 0, 8)
      const t = [0.25, 0.9]
      const { xt, ut } = tidy(() => Transport.interpolate(tf.tensor4d(x1, shape), tf.tensor4d(eps, shape), t))
      values(xt).forEach((v, i) => assert.closeTo(v, t[i >> 2]! * x1[i]! + (1 - t[i >> 2]!) * eps[i]!, 1e-6))
      values(ut).forEach((v, i) => assert.closeTo(v, x1[i]! - eps[i]!, 1e-6))
      // A network answering 0 leaves the loss at mean((x_1 − ε)²) per sample; it sees t unchanged.
      const seen: Array<ReadonlyArray<number>> = []
      const loss = tidy(() =>
        Transport.trainingLosses((x, tt) => (seen.push(tt), tf.zerosLike(x)), tf.tensor4d(x1, shape), t, tf.tensor4d(eps, shape)).loss
      )
      assert.deepStrictEqual(seen, [t])
      values(loss).forEach((l, b) => {
        const e = [0, 1, 2, 3].map((j) => (x1[b * 4 + j]! - eps[b * 4 + j]!) ** 2).reduce((a, c) => a + c) / 4
        assert.closeTo(l, e, 1e-5)
      })
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the ODE samplers follow the exact flow of Gaussian data: Heun to 1e-4, Euler to first order", () =>
    Effect.gen(function*() {
      const z = Rng.normal(Rng.stream(0, "test/z"), 0, 64)
      const x0 = tf.tensor4d(z, [4, 4, 4, 1])
      const error = (method: "euler" | "heun", numSteps: number) => {
        const out = Transport.sampleOde(gaussianVelocity, x0, { numSteps, method })
        const e = Math.max(...values(out).map((v, i) => Math.abs(v - (mu + s * z[i]!))))
        out.dispose()
        return e
      }
      const [euler, euler2, heun] = [error("euler", 51), error("euler", 101), error("heun", 51)]
      assert.isBelow(heun, 1e-3)
      assert.isBelow(euler, 0.05)
      // First order: halving the step roughly halves the error.
      assert.closeTo(euler / euler2, 2, 0.3)
      assert.isBelow(heun, euler / 10)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the Euler–Maruyama SDE sampler turns N(0, 1) into the data distribution N(μ, s²)", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const n = 64 * 64
      const x0 = tf.tensor4d(Rng.normal(Rng.stream(0, "test/sde-start"), 0, n), [64, 8, 8, 1])
      const before = (yield* compute.memory).tensors
      const out = Transport.sampleSde(gaussianVelocity, x0, { numSteps: 100, noise: Rng.stream(0, "test/sde") })
      const v = values(out)
      out.dispose()
      assert.strictEqual((yield* compute.memory).tensors, before)
      const mean = v.reduce((a, b) => a + b) / n
      const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / n)
      assert.closeTo(mean, mu, 0.02)
      assert.closeTo(std, s, 0.02)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("classifier-free guidance: the first 3 channels as the reference, or all C", () =>
    Effect.gen(function*() {
      // A network whose output channel c for label y is 10·y + c, plus x to tie it to the input.
      const net: Network.Network = (x, _t, y) =>
        tf.add(tf.tile(x, [1, 1, 1, 2]), tf.add(tf.reshape(tf.tensor1d(y.map((l) => 10 * l)), [-1, 1, 1, 1]), tf.range(0, 8))) as tf.Tensor4D
      const x = tf.zeros([2, 1, 1, 4]) as tf.Tensor4D
      const guidance = { scale: 4, nullClass: 9, channels: "first-3", inChannels: 4 } as const
      const out = values(tidy(() => Network.denoiser(net, [1, 2], guidance)(x, [5, 5])))
      // Guided: 90 + c + 4·(10·y − 90); others: the conditional 10·y + c.
      const guided = (y: number, c: number) => 90 + c + 4 * (10 * y - 90)
      assert.deepStrictEqual(out.slice(0, 8), [guided(1, 0), guided(1, 1), guided(1, 2), 13, 14, 15, 16, 17])
      const all = values(tidy(() => Network.denoiser(net, [1, 2], { ...guidance, channels: "all" })(x, [5, 5])))
      assert.deepStrictEqual(all.slice(8), [guided(2, 0), guided(2, 1), guided(2, 2), guided(2, 3), 24, 25, 26, 27])
      // Scale 1 is the plain conditional model, as DiT's sample.py.
      assert.deepStrictEqual(values(tidy(() => Network.denoiser(net, [1, 2], { ...guidance, scale: 1 })(x, [5, 5]))), [
        10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25, 26, 27
      ])
    }).pipe(Effect.provide(Compute.wasm)))
})
