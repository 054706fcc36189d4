import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Fixtures, MarStateDict } from "@tinyfusion/models"
import { type BackendName, Compute, HostTensor, ParamTree, tf, WebGpuFixture } from "@tinyfusion/tensor"
import * as MarSampling from "./MarSampling.ts"

const options: MarSampling.Options = { iterations: 4, cfgScale: 1, cfgSchedule: "linear", temperature: 1, seed: 0 }

describe("MarSampling", () => {
  it("the cosine mask schedule: at least one token fewer each step; the linear guidance schedule", () => {
    const run = (tokens: number, iterations: number) => {
      const out: Array<number> = []
      let masked = tokens
      for (let s = 0; s < iterations; s++) out.push(masked = MarSampling.maskedAfter(tokens, iterations, s, masked))
      return out
    }
    // floor(16·cos(π/2·(s+1)/4)) = 14, 11, 6, 0 → at least 1 left for the last step, which makes every remaining token.
    assert.deepStrictEqual(run(16, 4), [14, 11, 6, 1])
    // Written by hand from sample_tokens for T = 16 over 16 steps: the "at least one fewer" rule binds from step 2.
    assert.deepStrictEqual(run(16, 16), [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1])
    assert.strictEqual(MarSampling.maskedAfter(256, 64, 0, 256), 255)
    assert.strictEqual(MarSampling.scaleAt({ cfgScale: 3, cfgSchedule: "linear" }, 16, 11), 1 + (2 * 5) / 16)
    assert.strictEqual(MarSampling.scaleAt({ cfgScale: 3, cfgSchedule: "constant" }, 16, 11), 3)
  })

  it.effect("samples every token; batches are pure functions of (seed, batch); guidance and temperature change them; memory flat", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const config = { ...Fixtures.mar, numSamplingSteps: "5" }
      const params = HostTensor.treeToTensors(MarStateDict.init(config, 1))
      // Non-zero head output layers, so the head's ε and v depend on its inputs.
      const model = { config, params: ParamTree.mapTensors(params, (t) => tf.add(t, 0.05)) as ParamTree.ParamTree }
      ParamTree.dispose(params)
      const draw = (o: MarSampling.Options, batch: number) =>
        Effect.gen(function*() {
          const sampler = yield* MarSampling.make(config, o)
          const t = sampler.sample(model, batch, [0, 1, 3])
          const values = Array.from(t.dataSync())
          assert.deepStrictEqual(t.shape, [3, 4, 4, 2])
          t.dispose()
          return values
        })
      const before = (yield* compute.memory).tensors
      const a = yield* draw(options, 0)
      assert.isTrue(a.every((v) => Number.isFinite(v) && v !== 0), "every latent made")
      assert.deepStrictEqual(yield* draw(options, 0), a)
      assert.notDeepEqual(yield* draw(options, 1), a)
      assert.notDeepEqual(yield* draw({ ...options, cfgScale: 3 }, 0), a)
      assert.notDeepEqual(yield* draw({ ...options, temperature: 0.5 }, 0), a)
      // More steps than tokens: the steps after the last token is made predict none.
      const long = yield* draw({ ...options, iterations: 6 }, 0)
      assert.isTrue(long.every((v) => Number.isFinite(v) && v !== 0))
      assert.strictEqual((yield* compute.memory).tensors, before)
      ParamTree.dispose(model.params)
    }).pipe(Effect.provide(Compute.wasm)), { timeout: 60_000 })

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("guided sampling at a temperature gives wasm's tokens", () =>
      Effect.gen(function*() {
        const config = { ...Fixtures.mar, numSamplingSteps: "5" }
        const run = (backend: BackendName) =>
          Effect.gen(function*() {
            const compute = yield* Compute
            const params = HostTensor.treeToTensors(MarStateDict.init(config, 1))
            const model = { config, params: ParamTree.mapTensors(params, (t) => tf.add(t, 0.05)) as ParamTree.ParamTree }
            ParamTree.dispose(params)
            const sampler = yield* MarSampling.make(config, { ...options, cfgScale: 3, temperature: 0.9 })
            const t = sampler.sample(model, 0, [0, 1, 3])
            const values = yield* compute.read(t)
            t.dispose()
            ParamTree.dispose(model.params)
            return values
          }).pipe(Effect.provide(Compute.layer(backend)))
        const wasm = yield* run("wasm")
        const gpu = yield* run("webgpu")
        const scale = Math.max(...wasm.map(Math.abs))
        wasm.forEach((v, j) => assert.closeTo(gpu[j]!, v, 1e-4 * scale, `token value ${j}`))
      }), 120_000)
  })
})
