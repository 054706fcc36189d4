/**
 * Random pruning (paper §4.3, Figure 5, Table 3): sample K masks at the
 * target (K random blocks, or a random candidate per N:M group), score each
 * by its calibration loss, and keep the mask with the lowest, the median or
 * the highest loss. Every loss is kept in the decision for the histogram.
 *
 * Mask i is drawn from the stream `prune/random` at index i, so the three
 * picks of one seed see the same K masks. The search runs on the
 * checkpointed loop (one mask per step): a long search resumes where it
 * stopped. A mask whose loss is not finite is skipped (and listed).
 */
import { Effect, Schema } from "effect"
import { Checkpoint } from "@tinyfusion/core"
import { Rng } from "@tinyfusion/tensor"
import type { Pick } from "./Decision.ts"
import * as Pruner from "./Pruner.ts"
import * as Selection from "./Selection.ts"

export const Options = Schema.Struct({
  /** Masks sampled (paper: 100,000). */
  samples: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1000))),
  /** Checkpoint every this many masks (0: never). */
  checkpointEvery: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1000)))
})

export type Which = "min" | "median" | "max"

const Progress = Schema.Struct({ losses: Schema.Array(Schema.Finite) })

/** The min, median (the lower one for an even count) and max by loss; ties go to the earlier sample. */
export function picks(samples: ReadonlyArray<{ readonly index: number; readonly loss: number }>): Record<Which, { readonly index: number; readonly loss: number }> {
  const sorted = [...samples].sort((a, b) => a.loss - b.loss || a.index - b.index)
  return { min: sorted[0]!, median: sorted[Math.floor((sorted.length - 1) / 2)]!, max: sorted.at(-1)! }
}

const search = (which: Which) =>
  Effect.fn(`RandomSearch.${which}`)(function*(request: Pruner.Request) {
    const name = `random-${which}`
    const o = yield* Pruner.options(name, Options, request.options)
    const { stack, params, calibration, target } = request
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
    if (losses.length === 0) return yield* new Pruner.PruneFailed({ method: name, reason: `all ${o.samples} sampled masks had a non-finite loss` })
    const chosen = picks(losses.map((loss, j) => ({ index: indices[j]!, loss })))
    const pick = (w: Which): Pick => ({ index: chosen[w].index, kept: [...mask(chosen[w].index)], loss: chosen[w].loss })
    return {
      method: name,
      teacherDepth: stack.depth,
      kept: [...mask(chosen[which].index)],
      ...Selection.groupsOf(target, stack.depth),
      samples: { losses, skipped: [...done.skipped], min: pick("min"), median: pick("median"), max: pick("max") }
    }
  })

const method = (which: Which): Pruner.Method => ({
  name: `random-${which}`,
  description: `Random pruning: of K sampled masks, the one with the ${which === "median" ? "median" : which === "min" ? "lowest" : "highest"} calibration loss`,
  prune: search(which)
})

export const min = method("min")
export const median = method("median")
export const max = method("max")
