/**
 * The paper's figures redrawn from our numbers (rendered by @tinyfusion/plots).
 */
import type { Interval } from "@tinyfusion/eval"
import { Plot } from "@tinyfusion/plots"
import * as Paper from "./paper.ts"

/**
 * Figure 4: sampling speed-up against the share of layers removed: ours
 * (the median of per-round ratios, with its 95% interval as error bars), the
 * paper's and linear.
 */
export const speedup = (ours: ReadonlyArray<{ readonly depth: number; readonly speedup: Interval.Interval }>): Promise<Plot.Figure> => {
  const full = Paper.figure4.itPerS.find((p) => p.depth === 28)!
  const paper = Paper.figure4.itPerS.map((p) => ({ series: "paper (DiT-XL/2)", removed: 1 - p.depth / 28, speedup: p.itPerS / full.itPerS }))
  const linear = [28, 21, 14, 7].map((d) => ({ series: "linear", removed: 1 - d / 28, speedup: 28 / d }))
  const mine = ours.map((p) => ({ series: "ours", removed: 1 - p.depth / 28, speedup: p.speedup.value, lo: p.speedup.lo, hi: p.speedup.hi }))
  const x = { field: "removed", type: "quantitative", title: "share of layers removed", axis: { format: "%" } } as const
  return Plot.render("figure4-speedup", "Figure 4: sampling speed-up against depth pruned", {
    $schema: Plot.schema,
    width: 360,
    height: 240,
    layer: [
      {
        data: { values: [...linear, ...paper, ...mine] },
        mark: { type: "line", point: true },
        encoding: {
          x,
          y: { field: "speedup", type: "quantitative", title: "sampling speed-up (×)" },
          color: { field: "series", type: "nominal", title: null },
          strokeDash: { condition: { test: "datum.series === 'linear'", value: [4, 4] }, value: [1, 0] }
        }
      },
      {
        data: { values: mine },
        mark: { type: "rule" },
        encoding: { x, y: { field: "lo", type: "quantitative" }, y2: { field: "hi" }, color: { field: "series", type: "nominal", title: null } }
      }
    ]
  })
}

/** Figure 5: histogram of random masks' calibration losses, with each method's mask marked. */
export const calibrationHistogram = (
  losses: ReadonlyArray<number>,
  marks: ReadonlyArray<{ readonly label: string; readonly loss: number }>
): Promise<Plot.Figure> =>
  Plot.render("figure5-calibration-loss", "Figure 5: calibration loss of random masks", {
    $schema: Plot.schema,
    width: 420,
    height: 240,
    layer: [
      {
        data: { values: losses.map((loss) => ({ loss: Math.log10(loss) })) },
        mark: { type: "bar", color: "#9ecae1" },
        encoding: {
          x: { field: "loss", bin: { maxbins: 40 }, type: "quantitative", title: "log10 calibration loss" },
          y: { aggregate: "count", type: "quantitative", title: "masks" }
        }
      },
      {
        data: { values: marks.map((m) => ({ label: m.label, loss: Math.log10(m.loss) })) },
        mark: { type: "rule", strokeWidth: 2 },
        encoding: { x: { field: "loss", type: "quantitative" }, color: { field: "label", type: "nominal", title: null } }
      }
    ]
  })

/** Figure 6: the kept layer of each slot over mask-learning iterations, opacity = its probability. */
export const decisions = (
  history: ReadonlyArray<{ readonly iteration: number; readonly kept: ReadonlyArray<number>; readonly confidence: ReadonlyArray<number> }>,
  scheme: string
): Promise<Plot.Figure> =>
  Plot.render(`figure6-decisions-${scheme.replace(":", "-")}`, `Figure 6: ${scheme} pruning decisions during mask learning`, {
    $schema: Plot.schema,
    width: 420,
    height: 280,
    data: {
      values: history.flatMap((h) =>
        h.kept.map((layer, slot) => ({ iteration: h.iteration, slot, layer, probability: h.confidence[slot] ?? 1 }))
      )
    },
    mark: { type: "line", point: { filled: true, size: 12 }, strokeWidth: 1 },
    encoding: {
      x: { field: "iteration", type: "quantitative", title: "iteration" },
      y: { field: "layer", type: "quantitative", title: "layer index in the teacher" },
      detail: { field: "slot", type: "nominal" },
      opacity: { field: "probability", type: "quantitative", scale: { domain: [0, 1] }, title: "probability" }
    }
  })
