import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng } from "@tinyfusion/tensor"
import * as Bootstrap from "./Bootstrap.ts"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as FrechetDistance from "./FrechetDistance.ts"
import * as InceptionScore from "./InceptionScore.ts"
import * as Matrix from "./Matrix.ts"
import * as Metrics from "./Metrics.ts"

const dims = { pooled: 4, spatial: 2 * 2 * 7, classes: 3 }

/** n fake images' features: Gaussian pooled features shifted by `shift`, a 2×2×9 map, softmax of Gaussian logits. */
const summary = (n: number, seed: number, shift: number) =>
  Effect.gen(function*() {
    const s = (name: string, size: number) => Rng.normal(Rng.stream(seed, name), 0, size)
    const logits = s("logits", n * dims.classes)
    const probabilities = new Float32Array(n * dims.classes)
    for (let r = 0; r < n; r++) {
      const row = logits.subarray(r * dims.classes, (r + 1) * dims.classes).map((x) => Math.exp(x + (r % dims.classes === 0 ? 1 : 0)))
      const sum = row.reduce((a, b) => a + b, 0)
      probabilities.set(row.map((x) => x / sum), r * dims.classes)
    }
    const c = Metrics.collector(dims, `set ${seed}`, { keepSpatial: true })
    yield* c.add({
      pooled: Matrix.make(n, dims.pooled, Float32Array.from(s("pooled", n * dims.pooled), (x) => x + shift)),
      spatial: Matrix.spatial(s("map", n * 2 * 2 * 9), [n, 2, 2, 9]),
      probabilities: Matrix.make(n, dims.classes, probabilities)
    })
    return yield* c.result
  })

const rowsOf = (m: Matrix.Matrix, offsets: Int32Array, counts: Int32Array) => {
  const out: Array<number> = []
  counts.forEach((c, g) => {
    for (let k = 0; k < c; k++) out.push(...m.data.subarray(offsets[g]! * m.cols, offsets[g + 1]! * m.cols))
  })
  return Matrix.make(out.length / m.cols, m.cols, Float32Array.from(out))
}

const sd = (xs: ArrayLike<number>) => Bootstrap.standardError(xs)!

const settings = (replicates: number, groups: number): Bootstrap.Settings => ({ replicates, spatialReplicates: replicates, groups, seed: 3 })

const run = (samples: Metrics.Summary, reference: Metrics.Summary, s: Bootstrap.Settings, splitSize = 1000) =>
  Effect.gen(function*() {
    const groups = { samples: Bootstrap.groups(samples.pooled.count, s.groups), reference: Bootstrap.groups(reference.pooled.count, s.groups) }
    const scored = yield* Metrics.score(samples, reference, { groups, splitSize })
    return { ...scored, groups, replicates: yield* Bootstrap.replicates(samples, reference, scored.coverage, s, { splitSize }) }
  })

describe("Bootstrap", () => {
  it("groups cut rows evenly; draws are seeded counts summing to the group count", () => {
    assert.deepStrictEqual([...Bootstrap.groups(10, 4)], [0, 2, 5, 7, 10])
    assert.deepStrictEqual([...Bootstrap.groups(3, 50)], [0, 1, 2, 3])
    const a = Bootstrap.draws(0, "samples", 5, 40)
    assert.strictEqual(a.reduce((s, x) => s + x, 0), 40)
    assert.deepStrictEqual([...Bootstrap.draws(0, "samples", 5, 40)], [...a])
    assert.notDeepEqual([...Bootstrap.draws(0, "reference", 5, 40)], [...a])
    assert.notDeepEqual([...Bootstrap.draws(0, "samples", 6, 40)], [...a])
  })

  it.effect("a replicate is the metric of the drawn rows: FID, sFID and IS recomputed from them directly", () =>
    Effect.gen(function*() {
      const samples = yield* summary(30, 1, 0.3)
      const reference = yield* summary(45, 2, 0)
      // 10 sample groups of 3 rows, 10 reference groups of 4 or 5.
      const { groups, replicates, results } = yield* run(samples, reference, settings(6, 10), 12)
      for (let b = 0; b < 6; b++) {
        const cs = Bootstrap.draws(3, "samples", b, 10)
        const cr = Bootstrap.draws(3, "reference", b, 10)
        const stats = (m: Matrix.Matrix, o: Int32Array, c: Int32Array) => FeatureStatistics.fromMatrix("drawn", rowsOf(m, o, c))
        const fid = yield* FrechetDistance.compute(yield* stats(samples.pooledFeatures, groups.samples, cs), yield* stats(reference.pooledFeatures, groups.reference, cr))
        const sfid = yield* FrechetDistance.compute(
          yield* stats(samples.spatialFeatures!, groups.samples, cs),
          yield* stats(reference.spatialFeatures!, groups.reference, cr)
        )
        assert.closeTo(replicates.fid[b]!, fid, 1e-9 * fid)
        assert.closeTo(replicates.sfid[b]!, sfid, 1e-9 * sfid)
        assert.strictEqual(replicates.is[b], yield* InceptionScore.compute(rowsOf(samples.probabilities, groups.samples, cs), { splitSize: 12 }))
        for (const share of [replicates.precision[b]!, replicates.recall[b]!]) assert.isTrue(share >= 0 && share <= 1)
      }
      // The replicates scatter around the point estimates.
      assert.isAbove(sd(replicates.fid), 0)
      assert.isBelow(Math.abs(replicates.is.reduce((s, x) => s + x, 0) / 6 - results.is), 3 * sd(replicates.is))
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("paired: two evaluations of the same samples have the same replicates, so their difference is exactly 0", () =>
    Effect.gen(function*() {
      const reference = yield* summary(60, 2, 0)
      const a = yield* run(yield* summary(40, 1, 0.5), reference, settings(20, 8))
      const b = yield* run(yield* summary(40, 1, 0.5), reference, settings(20, 8))
      for (const name of Bootstrap.metricNames) assert.deepStrictEqual([...a.replicates[name]], [...b.replicates[name]], name)
      // Round trip through the stored file.
      const decoded = yield* Bootstrap.decode(Bootstrap.encode(a.replicates))
      for (const name of Bootstrap.metricNames) assert.deepStrictEqual([...decoded[name]], [...a.replicates[name]], name)
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the group bootstrap's spread of FID matches the spread over independent draws of both sets", () =>
    Effect.gen(function*() {
      // 40 independent draws of 200 samples (shifted by 0.4 in 4 dimensions: FID ≈ 0.64) and 400 references.
      const fids: Array<number> = []
      for (let i = 0; i < 40; i++) {
        const s = yield* summary(200, 100 + i, 0.4)
        const r = yield* summary(400, 200 + i, 0)
        fids.push(yield* FrechetDistance.compute(s.pooled, r.pooled))
      }
      const spread = sd(fids)
      // One draw, bootstrapped with 50 groups a side.
      const { replicates } = yield* run(yield* summary(200, 100, 0.4), yield* summary(400, 200, 0), { ...settings(200, 50), spatialReplicates: 0 })
      const ratio = sd(replicates.fid) / spread
      assert.isTrue(ratio > 0.7 && ratio < 1.4, `bootstrap sd / sd over draws = ${ratio.toFixed(3)} (${sd(replicates.fid)} vs ${spread})`)
      assert.strictEqual(replicates.sfid.length, 0)
    }).pipe(Effect.provide(Compute.wasm)), 60_000)

  it.effect("sFID replicates need the spatial rows; masks from other groups are refused", () =>
    Effect.gen(function*() {
      const samples = yield* summary(20, 1, 0)
      const reference = yield* summary(20, 2, 0)
      const { spatialFeatures: _, ...withoutRows } = samples
      const scored = yield* Metrics.score(withoutRows, reference, { groups: { samples: Bootstrap.groups(20, 5), reference: Bootstrap.groups(20, 5) } })
      const noRows = yield* Effect.flip(Bootstrap.replicates(withoutRows, reference, scored.coverage, settings(2, 5)))
      assert.match(noRows.message, /samples.spatial.*spatial rows were not kept/)
      const otherGroups = yield* Effect.flip(Bootstrap.replicates(samples, reference, scored.coverage, settings(2, 4)))
      assert.match(otherGroups.message, /masks of 5 sample and 5 reference groups, the bootstrap draws 4 and 4/)
    }).pipe(Effect.provide(Compute.wasm)))
})
