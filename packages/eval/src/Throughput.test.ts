import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { Config, DiT, Init, ModelArtifact } from "@tinyfusion/models"
import { Compute, ParamTree } from "@tinyfusion/tensor"
import * as Interval from "./Interval.ts"
import * as Sampling from "./Sampling.ts"
import * as Throughput from "./Throughput.ts"

describe("Throughput", () => {
  it.effect("runs warm-up plus timed passes and derives it/s and images/s from the median pass", () =>
    Effect.gen(function*() {
      let calls = 0
      // A pass that takes at least 3 ms of wall time, whatever the machine.
      const forward = Effect.sync(() => {
        calls++
        const start = performance.now()
        while (performance.now() - start < 3);
      })
      const t = yield* Throughput.measure(forward, { imagesPerBatch: 16, steps: 250, warmup: 2, repetitions: 5 })
      assert.strictEqual(calls, 7)
      assert.strictEqual(t.repetitions, 5)
      assert.isAtLeast(t.msPerIt, 3)
      assert.strictEqual(t.itPerS, 1000 / t.msPerIt)
      assert.strictEqual(t.imagesPerS, (t.itPerS * 16) / 250)
    }))

  it.effect("bad options are a typed error naming the field, before any pass runs", () =>
    Effect.gen(function*() {
      let calls = 0
      const error = yield* Effect.flip(
        Throughput.measure(Effect.sync(() => calls++), { imagesPerBatch: 8, steps: 250, warmup: 1, repetitions: 0 })
      )
      assert.strictEqual(error._tag, "InvalidThroughputOptions")
      assert.match(error.message, /repetitions/)
      assert.strictEqual(calls, 0)
    }))

  it.effect("sampling: a model's guided denoiser on a doubled batch, images/s from the sampler's evaluations, the parameter count", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const config = yield* Config.make("mini", { depth: 2, hiddenSize: 16, numHeads: 2, inputSize: 4, numClasses: 3 })
      const params = Init.params(config, 0)
      const before = (yield* compute.memory).tensors
      const sampling = Schema.decodeUnknownSync(Sampling.Options)({ sampler: "ddpm", steps: "250", cfgScale: 1.5, guidedChannels: "first-3", seed: 0 })
      const t = yield* Throughput.sampling({ family: "dit", config, params }, sampling, { batch: 4, warmup: 1, repetitions: 3 })
      assert.deepStrictEqual([t.batch, t.forwardBatch, t.repetitions], [4, 8, 3])
      assert.strictEqual(t.itPerS, 1000 / t.msPerIt)
      assert.strictEqual(t.imagesPerS, (t.itPerS * 4) / 250)
      assert.strictEqual(t.parameters, ModelArtifact.parameterCount(config))
      assert.strictEqual((yield* compute.memory).tensors, before, "no tensor outlives the measurement")
      const unguided = yield* Throughput.sampling({ family: "dit", config, params }, { ...sampling, cfgScale: 1 }, { batch: 4, warmup: 0, repetitions: 1 })
      assert.strictEqual(unguided.forwardBatch, 4)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("interleaved: every shape timed once per round, medians with their order-statistic interval; speed-ups paired by round", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const config = yield* Config.make("mini", { depth: 4, hiddenSize: 16, numHeads: 2, inputSize: 4, numClasses: 3 })
      const params = Init.params(config, 0)
      const before = (yield* compute.memory).tensors
      const sampling = Schema.decodeUnknownSync(Sampling.Options)({ sampler: "ddpm", steps: "50", cfgScale: 1.5, guidedChannels: "first-3", seed: 0 })
      // The shallow shape shares the deep one's first block (speed does not depend on weights).
      const shallow = DiT.keepBlocks(config, params, [0])
      const [deep, one] = yield* Throughput.interleaved(
        [{ model: { family: "dit", config, params }, sampling }, { model: { family: "dit", ...shallow }, sampling }],
        { batch: 2, warmup: 1, rounds: 6 }
      )
      for (const r of [deep!, one!]) {
        assert.strictEqual(r.itPerS.length, 6)
        assert.strictEqual(r.median.value, Interval.median(r.itPerS))
        // Six rounds: the interval is the range, at 1 − 2/64.
        assert.deepStrictEqual([r.median.lo, r.median.hi], [Math.min(...r.itPerS), Math.max(...r.itPerS)])
        assert.closeTo(r.median.level, 62 / 64, 1e-15)
        assert.strictEqual(r.imagesPerS, (r.median.value * 2) / 50)
      }
      assert.strictEqual(deep!.parameters, ModelArtifact.parameterCount(config))
      assert.strictEqual(one!.parameters, ModelArtifact.parameterCount(shallow.config))
      assert.strictEqual((yield* compute.memory).tensors, before, "no tensor outlives the measurement")
      ParamTree.dispose(params)
      // Per-round ratios: a round where both ran slow (load) cancels out.
      const s = Throughput.speedup([20, 10, 21, 19, 20, 22], [10, 5, 10.5, 9.5, 10, 11])
      assert.deepStrictEqual([s.value, s.lo, s.hi], [2, 2, 2])
      const bad = yield* Effect.flip(Throughput.interleaved([], { batch: 2, warmup: 0, rounds: 0 }))
      assert.match(bad.message, /rounds \(0\) and batch \(2\) must be positive integers/)
    }).pipe(Effect.provide(Compute.wasm)))
})
