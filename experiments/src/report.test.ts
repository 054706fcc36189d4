import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Figures from "./figures.ts"
import * as Report from "./report.ts"

const input = (results: Report.Input["results"]): Report.Input => ({
  preset: "quick",
  dataset: "synthetic fixture",
  backend: "wasm",
  results,
  figures: [{ title: "Figure 4", file: "figure4.png" }],
  samples: [],
  computeSeconds: 90,
  failures: [{ cell: "t2/tinysit-d14", reason: "out of memory" }]
})

describe("report", () => {
  it("tables put our stored numbers beside the paper's, and verdicts come from them", () => {
    const results = new Map([
      ["t3/learnable", { fid: 10.5, calibrationLoss: 0.7 }],
      ["t3/shortgpt", { fid: 12.25, calibrationLoss: 0.1 }],
      ["t3/max-loss", { calibrationLoss: 20, diverged: true }],
      ["t5/finetune", { fid: 9 }],
      ["t5/logits-kd", { fid: 8 }],
      ["t5/masked-kd-2", { fid: 7 }],
      ["t5/masked-kd-4", { fid: 7.5 }],
      ["f4/depth-28", { itPerS: 10, parameters: 1000 }],
      ["f4/depth-14", { itPerS: 19.5, parameters: 505 }],
      ["f4/width-50", { itPerS: 12.5, parameters: 485 }]
    ])
    const md = Report.markdown(Report.document(input(results)))
    assert.include(md, "| Learnable | 0.700 | 0.980 | – | 151.88 | 10.50 | 5.73 |")
    assert.include(md, "| ShortGPT | 0.100 | 0.200 | – | 66.10 | 12.25 | 22.28 |")
    assert.include(md, "| Max. Loss | 20.000 | 37.690 | NaN | NaN | NaN | NaN |")
    assert.include(md, "| Masked KD (2σ, 4σ) > logits KD > plain fine-tuning | Table 5 | reproduced | FID masked 2σ 7.000, 4σ 7.500, logits KD 8.000, fine-tuning 9.000 |")
    assert.include(md, "| depth 14 | 49.5% | 19.50 | 1.95 | 1.98 | 13.54 | 1.96 | 1.99 |")
    assert.include(md, "| width −50% | 51.5% | 12.50 | 1.25 | 2.06 | 10.43 | 1.51 | 2.00 |")
    assert.include(md, "| depth 21 | – | – | – | – | – | – | – |")
    assert.include(md, "| Depth pruning speeds sampling up almost linearly: about 2× at 50% depth (paper 1.96×) | Figure 4 | reproduced | it/s ratio D14 / D28 = 1.95× |")
    assert.include(md, "![Figure 4](figure4.png)")
    assert.include(md, "Compute time: 1.5 min")
    assert.include(md, "## Cells that failed\n\n| cell | reason |\n| --- | --- |\n| t2/tinysit-d14 | out of memory |")
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
      const fig = yield* Effect.promise(() =>
        Figures.speedup([
          { pruning: "depth", parameters: 800, itPerS: 10 },
          { pruning: "depth", parameters: 600, itPerS: 13 },
          { pruning: "depth", parameters: 400, itPerS: 19.5 },
          { pruning: "width", parameters: 400, itPerS: 14 }
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
