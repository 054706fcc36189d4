import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng } from "@tinyfusion/tensor"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as FrechetDistance from "./FrechetDistance.ts"
import * as InceptionScore from "./InceptionScore.ts"
import * as Matrix from "./Matrix.ts"
import * as Metrics from "./Metrics.ts"
import * as PrecisionRecall from "./PrecisionRecall.ts"

const dims = { pooled: 8, spatial: 2 * 2 * 7, classes: 5 }

/** Features of n fake images: Gaussian pooled features, a 2×2×9 map, softmax of Gaussian logits. */
const images = (n: number, seed: number, shift: number): Metrics.FeatureBatch => {
  const s = (name: string, size: number) => Rng.normal(Rng.stream(seed, name), 0, size)
  const pooled = Float32Array.from(s("pooled", n * dims.pooled), (x) => x + shift)
  const map = s("map", n * 2 * 2 * 9)
  const logits = s("logits", n * dims.classes)
  const probabilities = new Float32Array(n * dims.classes)
  for (let r = 0; r < n; r++) {
    const row = logits.subarray(r * dims.classes, (r + 1) * dims.classes).map((x) => Math.exp(2 * x))
    const sum = row.reduce((a, b) => a + b, 0)
    probabilities.set(row.map((x) => x / sum), r * dims.classes)
  }
  return {
    pooled: Matrix.make(n, dims.pooled, pooled),
    spatial: Matrix.spatial(map, [n, 2, 2, 9]),
    probabilities: Matrix.make(n, dims.classes, probabilities)
  }
}

const rows = (b: Metrics.FeatureBatch, start: number, end: number): Metrics.FeatureBatch => ({
  pooled: Matrix.slice(b.pooled, start, end),
  spatial: Matrix.slice(b.spatial, start, end),
  probabilities: Matrix.slice(b.probabilities, start, end)
})

const collect = (batch: Metrics.FeatureBatch, sizes: ReadonlyArray<number>, input: string) =>
  Effect.gen(function*() {
    const c = Metrics.collector(dims, input)
    let at = 0
    for (const size of sizes) {
      yield* c.add(rows(batch, at, at + size))
      at += size
    }
    assert.strictEqual(c.count, at)
    return yield* c.result
  })

describe("Metrics", () => {
  it.effect("batches collected one by one give the metrics of the whole sets", () =>
    Effect.gen(function*() {
      const sampleSet = images(90, 1, 0.5)
      const referenceSet = images(120, 2, 0)
      const samples = yield* collect(sampleSet, [32, 32, 26], "samples")
      const reference = yield* collect(referenceSet, [120], "reference")
      const results = yield* Metrics.evaluate(samples, reference, { splitSize: 30 })

      const whole = (m: Matrix.Matrix) => FeatureStatistics.fromMatrix("whole", m)
      const fid = yield* FrechetDistance.compute(yield* whole(sampleSet.pooled), yield* whole(referenceSet.pooled))
      const sfid = yield* FrechetDistance.compute(yield* whole(sampleSet.spatial), yield* whole(referenceSet.spatial))
      assert.closeTo(results.fid, fid, 1e-9 * fid)
      assert.closeTo(results.sfid, sfid, 1e-9 * sfid)
      assert.isAbove(results.fid, 0.5, "a shift of 0.5 in 8 dimensions moves the means by 2 in squared distance")
      assert.strictEqual(results.is, yield* InceptionScore.compute(sampleSet.probabilities, { splitSize: 30 }))
      const pr = yield* PrecisionRecall.compute(referenceSet.pooled, sampleSet.pooled)
      assert.strictEqual(results.precision, pr.precision)
      assert.strictEqual(results.recall, pr.recall)

      // Stored reference radii give the same answer.
      const referenceRadii = yield* PrecisionRecall.radii("reference", referenceSet.pooled)
      assert.deepStrictEqual(yield* Metrics.evaluate(samples, reference, { splitSize: 30, referenceRadii }), results)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a set against itself: FID = sFID = 0, precision = recall = 1", () =>
    Effect.gen(function*() {
      const set = yield* collect(images(100, 3, 0), [50, 50], "samples")
      const results = yield* Metrics.evaluate(set, set)
      assert.closeTo(results.fid, 0, 1e-6)
      assert.closeTo(results.sfid, 0, 1e-6)
      assert.strictEqual(results.precision, 1)
      assert.strictEqual(results.recall, 1)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("a batch whose parts disagree is a typed error naming the part", () =>
    Effect.gen(function*() {
      const batch = images(4, 4, 0)
      const c = Metrics.collector(dims, "samples")
      const short = yield* Effect.flip(c.add({ ...batch, spatial: Matrix.slice(batch.spatial, 0, 3) }))
      assert.strictEqual(short.input, "samples.spatial")
      assert.match(short.reason, /3 rows in a batch of 4 images/)
      const wide = yield* Effect.flip(c.add({ ...batch, pooled: Matrix.make(4, 3, new Float32Array(12)) }))
      assert.strictEqual(wide.input, "samples.pooled")
      assert.strictEqual(c.count, 0)
    }))
})
