/**
 * Sensitivity analysis (LeCun et al.'s loss-disturbance criterion, Tables 1
 * and 3): each block's score is the increase of the calibration loss when
 * that block alone is removed; the least sensitive blocks are removed.
 */
import { Effect, Schema } from "effect"
import * as Pruner from "./Pruner.ts"
import * as Selection from "./Selection.ts"

/**
 * A removal whose loss is not finite makes that block the most sensitive;
 * its score is the largest finite number (scores are stored as JSON).
 */
const increase = (loss: number, base: number): number => (Number.isFinite(loss) ? loss - base : Number.MAX_VALUE)

export const method = Pruner.make({
  name: "sensitivity",
  description: "Sensitivity analysis: remove the blocks whose removal alone raises the calibration loss least",
  module: import.meta.url,
  options: Schema.Struct({}),
  evidence: Selection.Scores,
  prune: Effect.fn("Sensitivity.prune")(function*(request: Pruner.Request<{}>) {
    const { stack, params, calibration } = request
    const base = yield* stack.calibrationLoss(params, calibration)
    if (!Number.isFinite(base)) {
      return yield* new Pruner.PruneFailed({ method: "sensitivity", reason: `the teacher's calibration loss is ${base}` })
    }
    const all = Array.from({ length: stack.depth }, (_, i) => i)
    const scores: Array<number> = []
    for (const removed of all) {
      const loss = yield* stack.calibrationLoss(params, calibration, { kept: all.filter((i) => i !== removed) })
      scores.push(increase(loss, base))
    }
    return { kept: Selection.top(scores, request.target), evidence: { scores, measure: "calibration-loss increase when the block alone is removed" } }
  })
})
