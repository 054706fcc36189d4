import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type Config, Init } from "@tinyfusion/models"
import { Compute, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import * as Sampler from "./Sampler.ts"

const tiny: Config.Config = {
  inputSize: 4,
  patchSize: 2,
  inChannels: 4,
  hiddenSize: 16,
  depth: 2,
  numHeads: 2,
  mlpRatio: 2,
  numClasses: 3,
  classDropoutProb: 0.1,
  learnSigma: true
}

const options = (sampler: Sampler.Kind): Sampler.Options & { seed: number; batch: number } =>
  ({ sampler, steps: 10, cfgScale: 4, guidedChannels: "first-3", seed: 7, batch: 2 })

/** The starting noise of batch 2 of seed 7, as the sampler draws it. */
const start = (n: number) => Rng.normal(Rng.stream(7, "sample/x"), 2, n * 64)

describe("Sampler", () => {
  it.effect("a freshly initialised DiT predicts ε = 0: DDIM maps x_T to x_T/√ᾱ of the last kept step; SiT's ODE leaves x_0 as it is", () =>
    Effect.gen(function*() {
      // The reference init zeroes the final layer, so every output (ε, v, velocity) is exactly 0.
      const params = Init.params(tiny, 0)
      const ddim = yield* Sampler.sample({ family: "dit", config: tiny, params }, [0, 1, 2], options("ddim"))
      const d = yield* GaussianDiffusion.make({ respacing: "10" })
      const scale = 1 / Math.sqrt(d.alphasCumprod[d.numTimesteps - 1]!)
      const x = start(3)
      ddim.dataSync().forEach((v, i) => assert.closeTo(v, x[i]! * scale, 1e-4 * scale * (1 + Math.abs(x[i]!))))
      const ode = yield* Sampler.sample({ family: "sit", config: tiny, params }, [0, 1, 2], options("ode"))
      assert.deepStrictEqual(Array.from(ode.dataSync()), Array.from(x))
      // DDPM is stochastic but a function of the seed: the same bits twice, others for another batch.
      const a = yield* Sampler.sample({ family: "dit", config: tiny, params }, [2, 0], options("ddpm"))
      const b = yield* Sampler.sample({ family: "dit", config: tiny, params }, [2, 0], options("ddpm"))
      const c = yield* Sampler.sample({ family: "dit", config: tiny, params }, [2, 0], { ...options("ddpm"), batch: 3 })
      assert.deepStrictEqual(a.shape, [2, 4, 4, 4])
      assert.deepStrictEqual(Array.from(a.dataSync()), Array.from(b.dataSync()))
      assert.notDeepEqual(Array.from(a.dataSync()), Array.from(c.dataSync()))
      tf.dispose([ddim, ode, a, b, c])
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a sampler of the other family, a class out of range, or guidance without a null class is a typed error", () =>
    Effect.gen(function*() {
      const params = Init.params(tiny, 0)
      const ode = yield* Effect.flip(Sampler.sample({ family: "dit", config: tiny, params }, [0], options("ode")))
      assert.match(ode.message, /a dit model samples with ddpm or ddim, not ode/)
      const label = yield* Effect.flip(Sampler.sample({ family: "sit", config: tiny, params }, [3], options("sde")))
      assert.match(label.message, /class 3 is not in 0\.\.2/)
      const unconditional = { ...tiny, classDropoutProb: 0 }
      const guided = yield* Effect.flip(Sampler.sample({ family: "dit", config: unconditional, params }, [0], options("ddpm")))
      assert.match(guided.message, /guidance needs the null class/)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.cpu)))
})
