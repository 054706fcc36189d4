import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { GaussianDiffusion } from "@tinyfusion/diffusion"
import { Config, Init, StateDict } from "@tinyfusion/models"
import { type BackendName, Compute, HostTensor, ParamTree, Rng, WebGpuFixture } from "@tinyfusion/tensor"
import * as Sampling from "./Sampling.ts"

const options = (sampler: Sampling.SamplerName, steps: string): Sampling.Options =>
  Schema.decodeUnknownSync(Sampling.Options)({ sampler, steps, cfgScale: 1.5, guidedChannels: "first-3", seed: 0 })

describe("Sampling", () => {
  it("network evaluations per sample: one per kept DDPM step, two per Heun update, one per SDE grid point", () => {
    assert.strictEqual(Sampling.evaluations(options("ddpm", "250")), 250)
    assert.strictEqual(Sampling.evaluations(options("ddim", "ddim50")), 50)
    assert.strictEqual(Sampling.evaluations(options("ddpm", "10,15,20")), 45)
    assert.strictEqual(Sampling.evaluations(options("ode", "5")), 8)
    assert.strictEqual(Sampling.evaluations(options("sde", "5")), 5)
    assert.throws(() => options("ode", "1"), /steps "1" must be an integer ≥ 2/)
  })

  it("labels: uniform draws that depend on the seed only, or classes in turn", () => {
    const drawn = Sampling.labels(3, 1000, 10, "random")
    assert.deepStrictEqual([...drawn], [...Sampling.labels(3, 1000, 10, "random")])
    assert.notDeepEqual([...drawn], [...Sampling.labels(4, 1000, 10, "random")])
    const counts = new Array(10).fill(0)
    for (const y of drawn) counts[y]++
    // 100 expected per class; a binomial's standard deviation is 9.5.
    for (const c of counts) assert.isTrue(c > 60 && c < 140, `class count ${c}`)
    assert.deepStrictEqual([...Sampling.labels(0, 7, 3, "balanced")], [0, 1, 2, 0, 1, 2, 0])
  })

  it.effect("batches are pure functions of (seed, batch): the same latents again, others for another batch", () =>
    Effect.gen(function*() {
      const config = yield* Config.make("mini", { depth: 1, hiddenSize: 16, numHeads: 2, inputSize: 4, numClasses: 3 })
      const params = Init.params(config, 0)
      const model = { family: "dit" as const, config, params }
      const sampler = yield* Sampling.make(options("ddpm", "3"))
      const draw = (batch: number) => {
        const t = sampler.sample(model, batch, [0, 1, 2])
        const values = t.dataSync()
        t.dispose()
        return [...values]
      }
      assert.deepStrictEqual(draw(0), draw(0))
      assert.notDeepEqual(draw(1), draw(0))
      // The zero-initialised model predicts ε = 0 and v = 0: one DDPM step from x_T is deterministic arithmetic.
      const one = yield* Sampling.make(options("ddpm", "1"))
      const xT = Rng.normal(Rng.stream(0, "evaluation/x_T"), 5, 3 * 4 * 4 * 4)
      const out = one.sample(model, 5, [0, 1, 2])
      const got = out.dataSync()
      out.dispose()
      // Respacing "1" keeps t = 0 alone: x_0 = √(1/ᾱ₀)·x_T with ᾱ₀ = 1 − 1e−4, and no noise at the last step.
      xT.forEach((x, i) => assert.closeTo(got[i]!, x / Math.sqrt(1 - 1e-4), 1e-5))
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a zero-initialised model: DDIM maps x_T to x_T/√ᾱ of the last kept step; SiT's ODE leaves x_0 as it is", () =>
    Effect.gen(function*() {
      // The reference init zeroes the final layer, so every output (ε, v, velocity) is exactly 0.
      const config = yield* Config.make("mini", { depth: 2, hiddenSize: 16, numHeads: 2, inputSize: 4, numClasses: 3 })
      const params = Init.params(config, 0)
      const xT = Rng.normal(Rng.stream(7, "evaluation/x_T"), 2, 3 * 4 * 4 * 4)
      const ddim = yield* Sampling.make({ ...options("ddim", "10"), seed: 7 })
      const out = ddim.sample({ family: "dit", config, params }, 2, [0, 1, 2])
      const d = yield* GaussianDiffusion.make({ respacing: "10" })
      const scale = 1 / Math.sqrt(d.alphasCumprod[d.numTimesteps - 1]!)
      out.dataSync().forEach((v, i) => assert.closeTo(v, xT[i]! * scale, 1e-4 * scale * (1 + Math.abs(xT[i]!))))
      const ode = yield* Sampling.make({ ...options("ode", "10"), seed: 7 })
      const flow = ode.sample({ family: "sit", config, params }, 2, [0, 1, 2])
      assert.deepStrictEqual(Array.from(flow.dataSync()), Array.from(xT))
      out.dispose()
      flow.dispose()
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("DDPM and DDIM with guidance (DiT), the ODE and the SDE (SiT) give wasm's latents", () =>
      Effect.gen(function*() {
        const config = yield* Config.make("mini", { depth: 2, hiddenSize: 16, numHeads: 2, inputSize: 4, numClasses: 3 })
        // Weights N(0, 0.1²) everywhere, so that every output depends on its inputs.
        const host = ParamTree.unflatten(StateDict.referenceShapes(config).map(([key, shape]) =>
          [key, HostTensor.float32(shape, Rng.normal(Rng.stream(3, key), 0, HostTensor.numel(shape)).map((v) => 0.1 * v))] as const
        )) as HostTensor.HostTree
        const samplers = [options("ddpm", "6"), options("ddim", "ddim6"), options("ode", "4"), options("sde", "6")]
        const run = (backend: BackendName) =>
          Effect.gen(function*() {
            const compute = yield* Compute
            const params = HostTensor.treeToTensors(host)
            const out = yield* Effect.forEach(samplers, (o) =>
              Effect.gen(function*() {
                const sampler = yield* Sampling.make(o)
                const family = o.sampler === "ode" || o.sampler === "sde" ? ("sit" as const) : ("dit" as const)
                const x = sampler.sample({ family, config, params }, 1, [0, 1, 2])
                const values = yield* compute.read(x)
                x.dispose()
                return values
              }))
            ParamTree.dispose(params)
            return out
          }).pipe(Effect.provide(Compute.layer(backend)))
        const wasm = yield* run("wasm")
        const gpu = yield* run("webgpu")
        samplers.forEach((o, i) => {
          const scale = Math.max(...wasm[i]!.map(Math.abs))
          wasm[i]!.forEach((v, j) => assert.closeTo(gpu[i]![j]!, v, 1e-4 * scale, `${o.sampler} [${j}]`))
        })
      }), 120_000)
  })
})
