import { assert, describe, it } from "@effect/vitest"
import { Interval } from "@tinyfusion/eval"
import * as Estimates from "./estimates.ts"

const t2 = Interval.studentTQuantile(0.975, 2)

describe("estimates", () => {
  it("seeds without replicates: mean ± t(0.975, S − 1)·s/√S", () => {
    const results: Estimates.Results = new Map([
      ["a", { runs: [1, 2, 3].map((fid, seed) => ({ seed, metrics: { fid } })) }]
    ])
    const e = Estimates.estimate(results, "a", "fid")
    assert.strictEqual(e.value, 2)
    // s² = 1, S = 3: half-width t₂·√(1/3).
    assert.closeTo(Interval.halfWidth(e), t2 * Math.sqrt(1 / 3), 1e-9)
    assert.deepStrictEqual([e.seeds, e.replicates], [3, 0])
  })

  it("seeds with replicates: V_boot of the seed-mean replicates plus s²/S, Welch–Satterthwaite degrees of freedom", () => {
    // Seed values 1, 2, 3; every seed's replicates at value ± c in the same draws, so the seed-mean replicates
    // are 2 ± c: V_boot = 4c²/3 (B = 4), V_seed = 1/3.
    const c = 0.5
    const runs = [1, 2, 3].map((fid, seed) => ({ seed, metrics: { fid }, replicates: { fid: [fid - c, fid + c, fid - c, fid + c] } }))
    const e = Estimates.estimate(new Map([["a", { runs }]]), "a", "fid")
    const vBoot = (4 * c * c) / 3
    const vSeed = 1 / 3
    const total = vBoot + vSeed
    const df = (total * total) / ((vSeed * vSeed) / 2 + (vBoot * vBoot) / 3)
    assert.closeTo(Interval.halfWidth(e), Interval.studentTQuantile(0.975, df) * Math.sqrt(total), 1e-9)
    assert.deepStrictEqual([e.value, e.seeds, e.replicates], [2, 3, 4])
  })

  it("differences are paired by seed and by draw: noise common to both cells cancels", () => {
    const noise = [0.3, -0.2, 0.5, -0.6, 0.1]
    const cell = (offset: number) => ({
      runs: [0, 1].map((seed) => ({ seed, metrics: { fid: 10 + offset + seed }, replicates: { fid: noise.map((z) => 10 + offset + seed + z) } }))
    })
    const results: Estimates.Results = new Map([["a", cell(0)], ["b", cell(2)]])
    const d = Estimates.difference(results, "a", "b", "fid")
    assert.deepStrictEqual([d.value, d.lo, d.hi], [-2, -2, -2])
    // Each cell alone carries the noise and the seed spread.
    assert.isAbove(Interval.halfWidth(Estimates.estimate(results, "a", "fid")), 0.5)
  })

  it("a cell without seeds joins every seed of the other; cells of disjoint seeds or missing numbers are Missing", () => {
    const results: Estimates.Results = new Map([
      ["teacher", { runs: [{ metrics: { fid: 5 }, replicates: { fid: [5, 5.2, 4.8] } }] }],
      ["pruned", { runs: [0, 1, 2].map((seed) => ({ seed, metrics: { fid: 8 + seed }, replicates: { fid: [8 + seed, 8.2 + seed, 7.8 + seed] } })) }],
      ["other", { runs: [{ seed: 7, metrics: { fid: 9 } }] }]
    ])
    // pruned − teacher per seed: 3, 4, 5 with replicates that cancel exactly: only the seed spread remains.
    const d = Estimates.difference(results, "pruned", "teacher", "fid")
    assert.strictEqual(d.value, 4)
    assert.closeTo(Interval.halfWidth(d), t2 * Math.sqrt(1 / 3), 1e-9)
    assert.throws(() => Estimates.difference(results, "pruned", "other", "fid"), Estimates.Missing)
    assert.throws(() => Estimates.estimate(results, "absent", "fid"), Estimates.Missing)
    assert.throws(() => Estimates.estimate(results, "teacher", "calibrationLoss"), Estimates.Missing)
  })

  it("speed: the median over rounds and per-round speed-ups", () => {
    const results: Estimates.Results = new Map([
      ["d28", { runs: [{ metrics: {} }], speed: { itPerS: [10, 9, 11, 10, 8, 10.5], parameters: 1000 } }],
      ["d14", { runs: [{ metrics: {} }], speed: { itPerS: [19, 18, 22, 20, 16, 21], parameters: 500 } }]
    ])
    const s = Estimates.speed(results, "d28")
    assert.deepStrictEqual([s.value, s.lo, s.hi], [10, 8, 11])
    const up = Estimates.speedup(results, "d14", "d28")
    // Ratios 1.9, 2, 2, 2, 2, 2: median 2, range [1.9, 2].
    assert.deepStrictEqual([up.value, up.lo, up.hi], [2, 1.9, 2])
    assert.deepStrictEqual(Estimates.summary(results, "d28").map(([m]) => m), ["itPerS"])
  })
})
