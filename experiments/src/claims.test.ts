import { assert, describe, it } from "@effect/vitest"
import { claims, spearman, type Results } from "./claims.ts"
import * as Paper from "./paper.ts"

/** The paper's own rows as if they were our results. */
const paperResults = (): Map<string, Paper.Metrics> => {
  const rows = [Paper.table1, Paper.table2, Paper.table3, Paper.table4, Paper.table5, Paper.table7, Paper.table8].flat()
  const results = new Map<string, Paper.Metrics>()
  for (const row of rows) if (row.cell !== undefined) results.set(row.cell, row)
  for (const { depth, itPerS } of Paper.figure4.itPerS) results.set(`f4/depth-${depth}`, { itPerS })
  for (const { removed, itPerS } of Paper.figure4.width) results.set(`f4/width-${100 * removed}`, { itPerS })
  return results
}

const judge = (id: string, results: Results) => claims.find((c) => c.id === id)!.judge(results)

describe("claims", () => {
  it("the paper's own numbers reproduce every claim they cover", () => {
    const results = paperResults()
    for (const claim of claims) {
      const j = claim.judge(results)
      // The paper shows decision confidence only as pictures.
      assert.strictEqual(j.verdict, claim.id === "decisions-converge" ? "not run" : "reproduced", `${claim.id}: ${j.evidence}`)
    }
    assert.strictEqual(judge("linear-speedup", results).evidence, "it/s ratio D14 / D28 = 1.96×")
    assert.strictEqual(judge("width-below-depth", results).evidence, "speed-up at half the parameters: depth 1.96×, width 1.51×")
  })

  it("verdicts follow the numbers: a swapped order is not reproduced, a missing cell is not run", () => {
    const results = paperResults()
    results.set("t5/logits-kd", { fid: 6 })
    assert.strictEqual(judge("kd-order", results).verdict, "not reproduced")
    results.delete("t5/finetune")
    const missing = judge("kd-order", results)
    assert.strictEqual(missing.verdict, "not run")
    assert.strictEqual(missing.evidence, "no fid for t5/finetune")
    // A diverged run is the worst FID: RepKD diverging reproduces its claim, converging does not.
    results.set("t5/repkd", { fid: 12 })
    assert.strictEqual(judge("repkd-diverges", results).verdict, "not reproduced")
    // "≥" tolerates 5%: 1:2 at 35.9 is within 5% of 2:4's 34.21; at 36.0 it is not.
    results.set("t4/1:2-lora", { fid: 35.9 })
    assert.strictEqual(judge("scheme-order", results).verdict, "reproduced")
    results.set("t4/1:2-lora", { fid: 36.0 })
    assert.strictEqual(judge("scheme-order", results).verdict, "not reproduced")
    results.set("t4/1:2-lora", { fid: 30, confidence: 0.95 })
    results.set("t4/2:4-lora", { fid: 31, confidence: 0.92 })
    results.set("t4/7:14-lora", { fid: 40, confidence: 0.5 })
    assert.strictEqual(judge("decisions-converge", results).verdict, "reproduced")
    // Width pruning as fast as depth pruning at half the parameters does not reproduce Figure 4's point.
    results.set("f4/width-50", { itPerS: 13.54 })
    assert.strictEqual(judge("width-below-depth", results).verdict, "not reproduced")
  })

  it("Spearman correlation: hand-computed values", () => {
    assert.closeTo(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1, 1e-12)
    assert.closeTo(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1, 1e-12)
    // ranks x = 0,1,2,3; y = 1,0,3,2 → Σd² = 4 → ρ = 1 − 6·4/(4·15) = 0.6
    assert.closeTo(spearman([1, 2, 3, 4], [2, 1, 4, 3]), 0.6, 1e-12)
    // ties take the average rank: y = 1,1,2 → ranks 0.5,0.5,2
    assert.closeTo(spearman([1, 2, 3], [1, 1, 2]), Math.sqrt(3) / 2, 1e-12)
  })
})
