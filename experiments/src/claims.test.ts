import { assert, describe, it } from "@effect/vitest"
import { Rng } from "@tinyfusion/tensor"
import * as Claims from "./claims.ts"
import * as Estimates from "./estimates.ts"
import * as Paper from "./paper.ts"

/**
 * The paper's own rows as if they were our results, measured without noise: one run each whose
 * replicates all equal its value; Fig. 4's it/s in 7 equal rounds.
 */
const paperResults = (): Map<string, Estimates.CellResult> => {
  const rows = [Paper.table1, Paper.table2, Paper.table3, Paper.table4, Paper.table5, Paper.table7, Paper.table8].flat()
  const results = new Map<string, Estimates.CellResult>()
  const exact = (row: Paper.Row) => Object.fromEntries(Estimates.sampledMetrics.flatMap((m) => (row[m] === undefined ? [] : [[m, [row[m], row[m]]]])))
  for (const row of rows) if (row.cell !== undefined) results.set(row.cell, { runs: [{ metrics: row, replicates: exact(row) }] })
  const timed = (itPerS: number, parameters: number): Estimates.CellResult => ({ runs: [{ metrics: {} }], speed: { itPerS: new Array(7).fill(itPerS), parameters } })
  for (const { depth, itPerS, parameters } of Paper.figure4.itPerS) results.set(`f4/depth-${depth}`, timed(itPerS, parameters))
  for (const { removed, itPerS, parameters } of Paper.figure4.width) results.set(`f4/width-${100 * removed}`, timed(itPerS, parameters))
  return results
}

const claim = (id: string) => Claims.claims.find((c) => c.id === id)!
const judge = (id: string, results: Estimates.Results) => Claims.judge(claim(id), results)

/** A cell evaluated once with FID `fid` and 200 bootstrap replicates of spread `sd` (its own seeded noise). */
const sampled = (fid: number, sd: number, stream: string): Estimates.CellResult => ({
  runs: [{ seed: 0, metrics: { fid }, replicates: { fid: Array.from(Rng.normal(Rng.stream(1, stream), 0, 200), (z) => fid + sd * z) } }]
})

describe("claims", () => {
  it("the paper's own numbers (exact) reproduce every claim they cover", () => {
    const results = paperResults()
    for (const c of Claims.claims) {
      const j = Claims.judge(c, results)
      // The paper shows decision confidence only as pictures.
      assert.strictEqual(j.verdict, c.id === "decisions-converge" ? "not run" : "reproduced", `${c.id}: ${j.evidence}`)
    }
    assert.strictEqual(judge("linear-speedup", results).evidence, "it/s depth-14 / depth-28 = 1.96 (exact) (≥ 1.80)")
    assert.strictEqual(judge("width-below-depth", results).evidence, "it/s width-50 / depth-14 = 0.770 (exact) (< 1.00)")
    // A threshold holds only when its whole interval is past it: rounds of 1.7 to 2.1 do not show ≥ 1.8.
    results.set("f4/depth-14", { runs: [{ metrics: {} }], speed: { itPerS: [11.7, 12.5, 13.5, 14.5, 13.8, 13.8], parameters: 340e6 } })
    results.set("f4/depth-28", { runs: [{ metrics: {} }], speed: { itPerS: new Array(6).fill(6.9), parameters: 675e6 } })
    assert.strictEqual(judge("linear-speedup", results).verdict, "inconclusive")
    assert.strictEqual(judge("median-beats-min-loss", results).evidence, "median-loss − min-loss = −14.24 (exact)")
    assert.strictEqual(judge("decisions-converge", results).evidence, "no confidence for t4/1:2-lora")
  })

  it("clearly separated, clearly reversed and tied results give reproduced, refuted and inconclusive", () => {
    const results = paperResults()
    // Median-loss FID 10 ± 0.2 against min-loss 12 ± 0.2 (independent noise): the difference is −2 ± ~0.55.
    results.set("t3/median-loss", sampled(10, 0.2, "a"))
    results.set("t3/min-loss", sampled(12, 0.2, "b"))
    const separated = judge("median-beats-min-loss", results)
    assert.strictEqual(separated.verdict, "reproduced")
    assert.match(separated.evidence, /^median-loss − min-loss = −2\.00 \[−2\.\d\d, −1\.\d\d\]$/)
    results.set("t3/median-loss", sampled(12, 0.2, "a"))
    results.set("t3/min-loss", sampled(10, 0.2, "b"))
    assert.strictEqual(judge("median-beats-min-loss", results).verdict, "refuted")
    results.set("t3/median-loss", sampled(10.05, 0.2, "a"))
    results.set("t3/min-loss", sampled(10, 0.2, "b"))
    assert.strictEqual(judge("median-beats-min-loss", results).verdict, "inconclusive")
  })

  it("several parts: all must hold; a non-strict part holds unless reversed; refutation is Bonferroni-corrected", () => {
    const results = paperResults()
    // Scheme order 1:2 ≤ 2:4 < 7:14: 1:2 and 2:4 tied, 2:4 clearly below 7:14.
    results.set("t4/1:2-lora", sampled(30, 0.3, "x"))
    results.set("t4/2:4-lora", sampled(30, 0.3, "y"))
    results.set("t4/7:14-lora", sampled(40, 0.3, "z"))
    assert.strictEqual(judge("scheme-order", results).verdict, "reproduced")
    // 1:2 clearly worse than 2:4: the non-strict part is reversed.
    results.set("t4/1:2-lora", sampled(35, 0.3, "x"))
    assert.strictEqual(judge("scheme-order", results).verdict, "refuted")
    // Reversed at 95% but not at the corrected 97.5%: inconclusive. The difference's sd over these
    // draws is 0.395: 1.96·0.395 = 0.775 < 0.83 < 2.24·0.395 = 0.885.
    results.set("t4/1:2-lora", sampled(30.83, 0.3, "x"))
    const borderline = judge("scheme-order", results)
    assert.strictEqual(borderline.verdict, "inconclusive", borderline.evidence)
    assert.match(borderline.evidence, /^1:2-lora − 2:4-lora = 0\.830 \[0\.0\d+, 1\.\d+\]; 2:4-lora − 7:14-lora = −10\.00/)
  })

  it("divergence is the worst FID; a missing cell is not run; a diverges-claim counts seeds", () => {
    const results = paperResults()
    results.set("t5/logits-kd", { runs: [{ seed: 0, metrics: { diverged: true } }] })
    const kd = judge("kd-order", results)
    assert.strictEqual(kd.verdict, "refuted")
    assert.include(kd.evidence, "masked-kd-2 − logits-kd = −∞ (logits-kd diverged)")
    results.delete("t5/finetune")
    assert.deepStrictEqual(judge("kd-order", results), { verdict: "not run", evidence: "no fid for t5/finetune" })
    results.set("t5/repkd", { runs: [0, 1, 2].map((seed) => ({ seed, metrics: { diverged: seed !== 1 } })) })
    const mixed = judge("repkd-diverges", results)
    assert.strictEqual(mixed.verdict, "inconclusive")
    assert.include(mixed.evidence, "repkd diverged in 2 of 3 seeds")
    results.set("t5/repkd", { runs: [{ seed: 0, metrics: { fid: 12 } }] })
    const converged = judge("repkd-diverges", results)
    assert.strictEqual(converged.verdict, "refuted")
    // One run without replicates: a FID of unknown uncertainty.
    assert.include(converged.evidence, "repkd converged (FID 12.00 (no interval: not bootstrapped))")
    results.set("t5/logits-kd", { runs: [{ seed: 0, metrics: { fid: 4 } }] })
    results.set("t5/finetune", { runs: [{ seed: 0, metrics: { fid: 6 } }] })
    assert.strictEqual(judge("kd-order", results).verdict, "inconclusive")
  })

  it("the instrument check: accuracy above chance and the teacher clearly better than the untrained network and the unrecovered D14", () => {
    const results = new Map([["t1/teacher", sampled(5, 0.2, "t")], ["i/untrained", sampled(80, 1, "u")], ["i/unrecovered", sampled(20, 0.5, "r")]])
    const net = { accuracy: 0.9, testImages: 1000, classes: 10 }
    const good = Claims.instrument(results, net)
    assert.isTrue(good.works)
    assert.match(good.summary, /classifies 90\.0% \[88\.\d%, 91\.\d%\] of 1000 test images correctly \(chance: 10\.0%\)\./)
    assert.match(good.summary, /untrained − teacher = 75\.00 \[7\d\.\d\d, 7\d\.\d\d\]\): the intervals do not overlap/)
    assert.match(good.summary, /unrecovered − teacher = 15\.00 \[1\d\.\d\d, 1\d\.\d\d\]\): the intervals do not overlap, so the metrics tell the teacher's samples from a pruned model's before recovery\./)
    // A pruned model as good as the teacher: the metrics cannot tell the differences the claims are about.
    results.set("i/unrecovered", sampled(5.1, 0.2, "r"))
    const flat = Claims.instrument(results, net)
    assert.isFalse(flat.works)
    assert.match(flat.summary, /unrecovered − teacher = .*: the intervals overlap, so the metrics cannot tell the teacher's samples from a pruned model's before recovery\./)
    results.set("i/unrecovered", sampled(20, 0.5, "r"))
    assert.isFalse(Claims.instrument(results, { ...net, accuracy: 0.11 }).works)
    // A published feature network (the paper preset's FID Inception) is taken as it is: the FID test alone decides.
    const published = Claims.instrument(results, { published: "the FID Inception-V3" })
    assert.isTrue(published.works)
    assert.match(published.summary, /^The feature network is the FID Inception-V3, published and not trained here: its accuracy is not measured\. The teacher's FID/)
    // Paired, the untrained network differs from the teacher by 0.05 ± ~0.03 (significant); alone, their
    // intervals (± 0.4) overlap: two models making the same noise.
    results.set("t1/teacher", sampled(5, 0.2, "t"))
    results.set("i/untrained", { runs: [{ metrics: { fid: 5.05 }, replicates: { fid: Array.from(results.get("t1/teacher")!.runs[0]!.replicates!.fid!, (x, k) => x + 0.05 + 0.01 * Math.sin(k)) } }] })
    const blind = Claims.instrument(results, net)
    assert.isFalse(blind.works)
    assert.isFalse(Claims.instrument(results, { published: "the FID Inception-V3" }).works)
    assert.match(blind.summary, /untrained − teacher = 0\.0500 \[0\.0\d+, 0\.0\d+\]\): the intervals overlap, so the metrics cannot tell/)
    results.delete("i/untrained")
    assert.isUndefined(Claims.instrument(results, net).works)
  })

  it("with an instrument that does not work no verdict counts: each is inconclusive and says what the numbers alone give", () => {
    const results = paperResults()
    const broken: Claims.Instrument = { works: false, summary: "" }
    const judged = Claims.judgeAll(results, broken)
    const j = (id: string) => judged.find((x) => x.claim.id === id)!.judgement
    assert.deepStrictEqual([j("kd-order").verdict, j("kd-order").numbersAlone], ["inconclusive", "reproduced"])
    assert.deepStrictEqual(j("decisions-converge"), { verdict: "not run", evidence: "no confidence for t4/1:2-lora" })
    assert.isUndefined(Claims.judgeAll(results, { works: true, summary: "" }).find((x) => x.claim.id === "kd-order")!.judgement.numbersAlone)
  })

  it("exact numbers: confidence thresholds and speed-ups decide without intervals", () => {
    const results = paperResults()
    const run = (fid: number, confidence: number): Estimates.CellResult => ({ runs: [{ metrics: { fid, confidence }, replicates: { fid: [fid, fid] } }] })
    results.set("t4/1:2-lora", run(30, 0.95))
    results.set("t4/2:4-lora", run(31, 0.92))
    results.set("t4/7:14-lora", run(40, 0.5))
    assert.strictEqual(judge("decisions-converge", results).verdict, "reproduced")
    results.set("t4/2:4-lora", run(31, 0.85))
    assert.strictEqual(judge("decisions-converge", results).verdict, "refuted")
    // Width pruning faster than depth pruning at half the parameters refutes Figure 4's point.
    results.set("f4/width-50", { runs: [{ metrics: {} }], speed: { itPerS: new Array(7).fill(14), parameters: 338e6 } })
    assert.strictEqual(judge("width-below-depth", results).verdict, "refuted")
  })

  it("Spearman correlation: hand-computed values", () => {
    assert.closeTo(Claims.spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1, 1e-12)
    assert.closeTo(Claims.spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1, 1e-12)
    // ranks x = 0,1,2,3; y = 1,0,3,2 → Σd² = 4 → ρ = 1 − 6·4/(4·15) = 0.6
    assert.closeTo(Claims.spearman([1, 2, 3, 4], [2, 1, 4, 3]), 0.6, 1e-12)
    // ties take the average rank: y = 1,1,2 → ranks 0.5,0.5,2
    assert.closeTo(Claims.spearman([1, 2, 3], [1, 1, 2]), Math.sqrt(3) / 2, 1e-12)
  })

  it("numbers in evidence: true minus signs, two decimals from 1 up, three significant digits below", () => {
    assert.deepStrictEqual([Claims.num(-1.923), Claims.num(0.01234), Claims.num(123.456), Claims.num(0), Claims.num(-Infinity)], [
      "−1.92",
      "0.0123",
      "123.5",
      "0",
      "−∞"
    ])
  })
})
