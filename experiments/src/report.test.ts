import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type * as Estimates from "./estimates.ts"
import * as Figures from "./figures.ts"
import type * as Paper from "./paper.ts"
import * as Report from "./report.ts"

const input = (results: Report.Input["results"]): Report.Input => ({
  preset: "quick",
  evidence: false,
  committedResults: "../../experiments/results/",
  dataset: "synthetic fixture",
  backend: "wasm",
  results,
  featureNet: { accuracy: 0.9, testImages: 1000, classes: 10 },
  method: { replicates: 50, spatialReplicates: 20, groups: 32, seeds: [{ table: "3", seeds: 3 }] },
  figures: [{ title: "Figure 4", file: "figure4.png" }],
  samples: [],
  computeSeconds: 90,
  failures: [{ cell: "t2/tinysit-d14", reason: "out of memory" }]
})

/** One run; FID with two replicates 0.1 either side (sd 0.141, t(0.975, 1) = 12.71: ± 1.80). */
const run = (metrics: Paper.Metrics, fid?: number): Estimates.CellResult => ({
  runs: [{ metrics: fid === undefined ? metrics : { ...metrics, fid }, ...(fid === undefined ? {} : { replicates: { fid: [fid - 0.1, fid + 0.1] } }) }]
})

describe("report", () => {
  it("tables put our stored numbers ± their half-widths beside the paper's, and verdicts come from them", () => {
    const results = new Map<string, Estimates.CellResult>([
      ["t3/learnable", run({ calibrationLoss: 0.7 }, 10.5)],
      ["t3/shortgpt", run({ calibrationLoss: 0.1 }, 12.25)],
      ["t3/max-loss", run({ calibrationLoss: 20, diverged: true })],
      ["t5/finetune", run({}, 9)],
      ["t5/logits-kd", run({}, 8)],
      ["t5/masked-kd-2", run({}, 7)],
      ["t5/masked-kd-4", run({ fid: 7.5 })],
      ["f4/depth-28", { runs: [{ metrics: {} }], speed: { itPerS: new Array(6).fill(10), parameters: 1000 } }],
      ["f4/depth-14", { runs: [{ metrics: {} }], speed: { itPerS: [19.5, 19, 20, 19.5, 19.5, 19.5], parameters: 505 } }],
      ["f4/width-50", { runs: [{ metrics: {} }], speed: { itPerS: new Array(6).fill(12.5), parameters: 485 } }]
    ])
    const md = Report.markdown(Report.document(input(results)))
    // Not evidence, said first, with the link to the committed results.
    assert.match(md, /^# TinyFusion reproduction — preset quick\n\nThese verdicts are not evidence\. .* \[experiments\/results\/\]\(\.\.\/\.\.\/experiments\/results\/\)\.\n/)
    assert.include(md, "| Learnable | 0.700 | 0.980 | – | 151.88 | 10.50 ± 1.80 | 5.73 |")
    assert.include(md, "| ShortGPT | 0.100 | 0.200 | – | 66.10 | 12.25 ± 1.80 | 22.28 |")
    assert.include(md, "| Max. Loss | 20.000 | 37.690 | NaN | NaN | NaN | NaN |")
    // Without replicates a sampled number has no interval to show.
    assert.include(md, "| fine-tuning | – | – | 9.00 ± 1.80 | 5.79 |")
    assert.include(md, "| Masked KD (4σ) | – | 391.4 | 7.50 ± ? | 3.75 |")
    // The instrument was not checked (no teacher): every verdict is marked.
    assert.include(md, "The teacher and i/untrained were not both evaluated (no fid for t1/teacher). " +
      "The teacher and i/unrecovered were not both evaluated (no fid for t1/teacher). The instrument was not checked")
    // Paired replicates: the differences' noise cancels (exact); 4σ has no replicates (no interval).
    assert.include(md, "| Masked KD (2σ, 4σ) > logits KD > plain fine-tuning | Table 5 | inconclusive (no evidence) | " +
      "masked-kd-2 − logits-kd = −1.00 (exact); masked-kd-4 − logits-kd = −0.500 (no interval: not bootstrapped); logits-kd − finetune = −1.00 (exact) |")
    assert.include(md, "| Plain RepKD and Masked KD with 0.1σ diverge | Table 5 | not run | no result for t5/repkd |")
    // Speed: medians over rounds and per-round speed-ups, with their intervals; parameters from the shapes.
    assert.include(md, "| depth 14 | 49.5% | 19.50 [19.00, 20.00] | 1.95 [1.90, 2.00] | 1.98 | 13.54 | 1.96 | 1.99 |")
    assert.include(md, "| width −50% | 51.5% | 12.50 [12.50, 12.50] | 1.25 [1.25, 1.25] | 2.06 | 10.43 | 1.51 | 2.00 |")
    assert.include(md, "| depth 21 | – | – | – | – | – | – | – |")
    assert.include(md, "| Depth pruning speeds sampling up almost linearly: about 2× at 50% depth (paper 1.96×) | Figure 4 | inconclusive (no evidence; the numbers alone: reproduced) | it/s depth-14 / depth-28 = 1.95 [1.90, 2.00] (≥ 1.80) |")
    assert.include(md, "0 reproduced, 0 refuted, 3 inconclusive, 14 not run. The instrument was not checked: no verdict is shown to rest on " +
      "evidence, and each counts as inconclusive. The numbers alone: 2 reproduced, 0 refuted, 1 inconclusive, 14 not run.")
    assert.include(md, "![Figure 4](figure4.png)")
    assert.include(md, "Compute time: 1.5 min")
    assert.include(md, "## Cells that failed\n\n| cell | reason |\n| --- | --- |\n| t2/tinysit-d14 | out of memory |")
    assert.include(md, "a bootstrap of 50 replicates (sFID: the first 20)")
    assert.include(md, "Cells of Table 3 ran with 3 recovery seeds")
  })

  it("the HTML page is self-contained and escaped", () => {
    const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47])
    const page = Report.html(Report.document(input(new Map())), (file) => {
      assert.strictEqual(file, "figure4.png")
      return png
    })
    assert.include(page, `src="data:image/png;base64,${Buffer.from(png).toString("base64")}"`)
    assert.include(page, "1:2 ≥ 2:4 &gt; 7:14")
    assert.notInclude(page, "figure4.png\"")
  })

  it.effect("figures render to SVG and PNG", () =>
    Effect.gen(function*() {
      const up = (value: number) => ({ value, lo: value - 0.1, hi: value + 0.1, level: 0.97 })
      const fig = yield* Effect.promise(() =>
        Figures.speedup([
          { pruning: "depth", parameters: 800, speedup: up(1) },
          { pruning: "depth", parameters: 600, speedup: up(1.3) },
          { pruning: "depth", parameters: 400, speedup: up(1.95) },
          { pruning: "width", parameters: 400, speedup: up(1.4) }
        ])
      )
      assert.match(fig.svg, /^<svg/)
      assert.deepStrictEqual([...fig.png.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47])
      // The legend names the five series: ours and the paper's by depth and by width, and linear.
      for (const series of ["ours, depth", "ours, width", "paper, depth (DiT-XL/2)", "paper, width (Diff-Pruning)", "linear"]) {
        assert.include(fig.svg, `>${series}<`)
      }
      const hist = yield* Effect.promise(() => Figures.calibrationHistogram([0.2, 0.3, 0.3, 1, 5], [{ label: "learnable", loss: 0.98 }]))
      assert.match(hist.svg, /learnable/)
      const dyn = yield* Effect.promise(() =>
        Figures.decisions([{ iteration: 0, kept: [0, 3], confidence: [0.5, 0.5] }, { iteration: 10, kept: [1, 3], confidence: [0.9, 0.99] }], "1:2")
      )
      assert.strictEqual(dyn.name, "figure6-decisions-1-2")
    }))
})
