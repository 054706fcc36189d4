import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, ParamTree, tf } from "@tinyfusion/tensor"
import * as Autoencoder from "./Autoencoder.ts"
import * as Synthetic from "./Synthetic.ts"

const tiny: Autoencoder.Config = { imageSize: 8, imageChannels: 1, channels: [8, 16], latentChannels: 2, klWeight: 1e-4 }

describe("Autoencoder", () => {
  it.effect("mini preset: 32×32×1 → 8×8×4 posterior → 32×32×1; state_dict keys", () =>
    Effect.gen(function*() {
      const params = Autoencoder.init(Autoencoder.mini, 0)
      const x = tf.zeros([2, 32, 32, 1]) as tf.Tensor4D
      const posterior = Autoencoder.encode(params, x)
      assert.deepStrictEqual(posterior.mean.shape, [2, 8, 8, 4])
      assert.deepStrictEqual(posterior.logvar.shape, [2, 8, 8, 4])
      assert.deepStrictEqual(Autoencoder.decode(params, posterior.mean).shape, [2, 32, 32, 1])
      assert.deepStrictEqual(Autoencoder.latentShape(Autoencoder.mini), [8, 8, 4])
      const keys = ParamTree.flattenTensors(params).map(([k, t]) => `${k} ${t.shape.join("×")}`)
      assert.includeMembers(keys, [
        "encoder.conv_in.weight 16×1×3×3",
        "encoder.down.1.weight 64×32×2×2",
        "encoder.conv_out.weight 8×64×3×3",
        "decoder.up.0.weight 64×32×2×2",
        "decoder.res.2.weight 16×16×3×3",
        "decoder.conv_out.bias 1"
      ])
      // Encoder: conv_in, 2 down, 2 res, conv_out; decoder: conv_in, 3 res, 2 up, conv_out; weight and bias each.
      assert.strictEqual(keys.length, 2 * (6 + 7))
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("KL of N(1, 1) per latent is ½·(1 + 1 − 1 − 0) = ½, summed per image", () =>
    Effect.gen(function*() {
      const kl = Autoencoder.kl({ mean: tf.ones([3, 2, 2, 4]) as tf.Tensor4D, logvar: tf.zeros([3, 2, 2, 4]) as tf.Tensor4D })
      assert.deepStrictEqual(Array.from(kl.dataSync()), [8, 8, 8])
      const sharp = Autoencoder.kl({ mean: tf.zeros([1, 1, 1, 1]) as tf.Tensor4D, logvar: tf.fill([1, 1, 1, 1], Math.log(4)) as tf.Tensor4D })
      // ½·(0 + 4 − 1 − ln 4)
      assert.closeTo(sharp.dataSync()[0]!, 0.5 * (3 - Math.log(4)), 1e-6)
    }).pipe(Effect.provide(Compute.cpu)))

  it("PSNR over the centre crop, pixels mapped to [0, 1]", () => {
    const a = new Float32Array(2 * 4 * 4)
    const b = new Float32Array(2 * 4 * 4).fill(0.2)
    // A wild border that the 2×2 centre crop must ignore.
    for (const i of [0, 3, 12, 15, 16]) b[i] = -1
    b[16 + 5] = 0.4
    const p = Autoencoder.psnr(a, b, [2, 4, 4, 1], 2)
    // Image 0: every centre difference 0.1 in [0, 1]: MSE 0.01 → 20 dB. Image 1: 0.1, 0.2, 0.1, 0.1 → MSE 0.0175.
    assert.closeTo(p[0]!, 20, 1e-6)
    assert.closeTo(p[1]!, 10 * Math.log10(1 / 0.0175), 1e-5)
  })

  it.effect("trains on synthetic squares: reconstruction error falls, tensors do not leak", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const set = Synthetic.images({ classes: 3, count: 64, size: 8, channels: 1, seed: 0 }, "train")
      const training: Autoencoder.TrainConfig = { seed: 0, steps: 40, batchSize: 8, lr: 5e-3, clip: 1 }
      const before = (yield* compute.memory).tensors
      // Mean MSE of each 10 steps.
      const mses: Array<number> = []
      let state = Autoencoder.initialState(tiny, training)
      let sum = 0
      while (state.step < training.steps) {
        const next = Autoencoder.step(tiny, training, state, set)
        sum += (yield* compute.read(next.losses.mse))[0]!
        tf.dispose([next.losses.total, next.losses.mse, next.losses.kl])
        Autoencoder.disposeState(state)
        state = next.state
        if (state.step % 10 === 0) {
          mses.push(sum / 10)
          sum = 0
        }
      }
      assert.strictEqual(state.step, 40)
      assert.strictEqual(mses.length, 4)
      assert.isBelow(mses[3]!, 0.5 * mses[0]!)
      Autoencoder.disposeState(state)
      assert.strictEqual((yield* compute.memory).tensors, before)
    }).pipe(Effect.provide(Compute.wasm)), 60_000)
})
