/**
 * Random pruning (paper §4.3, Figure 5, Table 3): sample K masks at the
 * target (K random blocks, or a random candidate per N:M group), score each
 * by its calibration loss, and keep the mask with the lowest, the median or
 * the highest loss (option `pick`). Every loss is kept in the evidence for
 * the histogram.
 *
 * Mask i is drawn from the stream `prune/random` at index i, so the three
 * picks of one seed see the same K masks. The search runs on the
 * checkpointed loop (one mask per step): a long search resumes where it
 * stopped. A mask whose loss is not finite is skipped (and listed).
 */
import { Effect, Schema } from "effect"
import { Checkpoint, Method } from "@tinyfusion/core"
import { Rng } from "@tinyfusion/tensor"
import * as Pruner from "./Pruner.ts"
import * as Selection from "./Selection.ts"

export const Which = Schema.Literals(["min", "median", "max"])
export type Which = typeof Which.Type

export const Options = Schema.Struct({
  pick: Method.option(Which, "min", "Which sampled mask to keep: the lowest, the median or the highest calibration loss"),
  samples: Method.option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 1000, "Masks sampled (paper: 100,000)"),
  checkpointEvery: Method.option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), 1000, "Checkpoint every this many masks (0: never)")
})
export type Options = typeof Options.Type

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const Pick = Schema.Struct({
  /** Which sample (its index in the search). */
  index: Index,
  kept: Schema.Array(Index),
  loss: Schema.Finite
})
export type Pick = typeof Pick.Type

/** Every sampled mask's calibration loss and the three picks (Figure 5, Table 3). */
export const Evidence = Schema.Struct({
  /** Calibration loss of each sample with a finite loss, in sample order. */
  losses: Schema.Array(Schema.Finite),
  /** Samples whose loss was not finite (left out of `losses` and of the picks). */
  skipped: Schema.Array(Index),
  min: Pick,
  median: Pick,
  max: Pick
})
export type Evidence = typeof Evidence.Type

const Progress = Schema.Struct({ losses: Schema.Array(Schema.Finite) })

/** The min, median (the lower one for an even count) and max by loss; ties go to the earlier sample. */
export function picks(samples: ReadonlyArray<{ readonly index: number; readonly loss: number }>): Record<Which, { readonly index: number; readonly loss: number }> {
  const sorted = [...samples].sort((a, b) => a.loss - b.loss || a.index - b.index)
  return { min: sorted[0]!, median: sorted[Math.floor((sorted.length - 1) / 2)]!, max: sorted.at(-1)! }
}

export const method = Pruner.make({
  name: "random",
  description: "Random pruning: of K sampled masks, the one with the lowest, the median or the highest calibration loss",
  module: import.meta.url,
  options: Options,
  evidence: Evidence,
  prune: Effect.fn("RandomSearch.prune")(function*(request: Pruner.Request<Options>) {
    const { stack, params, calibration, target, options: o } = request
    const stream = Rng.stream(request.seed, "prune/random")
    const mask = (i: number) => Selection.random(stream, i, stack.depth, target)
    const done = yield* Checkpoint.loop(request.ctx, {
      steps: o.samples,
      every: o.checkpointEvery,
      data: Progress,
      nonFinite: "skip",
      init: Effect.sync(() => ({ tensors: {}, data: { losses: [] as ReadonlyArray<number> } })),
      // Appended in place (a copy per step would cost O(K²)); a non-finite loss is not appended and the loop skips it.
      step: (state, step) =>
        Effect.map(stack.calibrationLoss(params, calibration, { kept: mask(step) }), (loss) => {
          if (Number.isFinite(loss)) (state.data.losses as Array<number>).push(loss)
          return { state, loss }
        })
    })
    const skipped = new Set(done.skipped)
    const indices = Array.from({ length: o.samples }, (_, i) => i).filter((i) => !skipped.has(i))
    const losses = done.state.data.losses
    if (losses.length === 0) return yield* new Pruner.PruneFailed({ method: "random", reason: `all ${o.samples} sampled masks had a non-finite loss` })
    const chosen = picks(losses.map((loss, j) => ({ index: indices[j]!, loss })))
    const pick = (w: Which): Pick => ({ index: chosen[w].index, kept: [...mask(chosen[w].index)], loss: chosen[w].loss })
    return {
      kept: mask(chosen[o.pick].index),
      evidence: { losses, skipped: [...done.skipped], min: pick("min"), median: pick("median"), max: pick("max") }
    }
  })
})
