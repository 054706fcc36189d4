/**
 * The paper's figures redrawn from our numbers (rendered by @tinyfusion/plots).
 */
import type { Interval } from "@tinyfusion/eval"
import { Plot } from "@tinyfusion/plots"
import * as Paper from "./paper.ts"

/**
 * A shape Figure 4 timed: depth- or width-pruned (or the teacher), its
 * parameters and its speed-up over the teacher (the median of per-round
 * ratios, with its interval).
 */
export interface SpeedPoint {
  readonly pruning: "depth" | "width"
  readonly parameters: number
  readonly speedup: Interval.Interval
}

/**
 * Figure 4: sampling speed-up against the share of parameters removed, by
 * depth and by width pruning; ours (with 95% intervals as error bars), the
 * paper's and the linear speed-up (parameters of the teacher / parameters).
 * Both series start at the teacher (the shape with the most parameters).
 */
export const speedup = (ours: ReadonlyArray<SpeedPoint>): Promise<Plot.Figure> => {
  const paperLine = (series: string, points: ReadonlyArray<{ readonly parameters: number; readonly itPerS: number }>) => {
    const full = [...points].sort((a, b) => b.parameters - a.parameters)[0]!
    return points.map((p) => ({ series, removed: 1 - p.parameters / full.parameters, speedup: p.itPerS / full.itPerS }))
  }
  const paperFull = Paper.figure4.itPerS[0]
  const teacher = ours.filter((p) => p.pruning === "depth").sort((a, b) => b.parameters - a.parameters)[0]
  const mine = teacher === undefined ? [] : [
    ...ours.filter((p) => p.pruning === "depth").map((p) => ({ ...p, series: "ours, depth" })),
    ...[teacher, ...ours.filter((p) => p.pruning === "width")].map((p) => ({ ...p, series: "ours, width" }))
  ].map((p) => ({ series: p.series, removed: 1 - p.parameters / teacher.parameters, speedup: p.speedup.value, lo: p.speedup.lo, hi: p.speedup.hi }))
  const linear = [0, 0.25, 0.5, 0.75].map((removed) => ({ series: "linear", removed, speedup: 1 / (1 - removed) }))
  const x = { field: "removed", type: "quantitative", title: "share of parameters removed", axis: { format: "%" } } as const
  const color = { field: "series", type: "nominal", title: null, legend: { labelLimit: 240 } } as const
  return Plot.render("figure4-speedup", "Figure 4: sampling speed-up of depth and width pruning", {
    $schema: Plot.schema,
    width: 360,
    height: 240,
    layer: [
      {
        data: {
          values: [
            ...linear,
            ...paperLine("paper, depth (DiT-XL/2)", Paper.figure4.itPerS),
            ...paperLine("paper, width (Diff-Pruning)", [paperFull, ...Paper.figure4.width]),
            ...mine
          ]
        },
        mark: { type: "line", point: true },
        encoding: {
          x,
          y: { field: "speedup", type: "quantitative", title: "sampling speed-up (×)" },
          color,
          strokeDash: { condition: { test: "datum.series === 'linear'", value: [4, 4] }, value: [1, 0] }
        }
      },
      {
        data: { values: mine },
        mark: { type: "rule" },
        encoding: { x, y: { field: "lo", type: "quantitative" }, y2: { field: "hi" }, color }
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
