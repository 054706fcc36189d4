/**
 * What a pruner decides: the teacher blocks kept, and the evidence for it —
 * per-block scores (baselines), per-group candidate probabilities and their
 * history over the iterations (the learnable method, Figure 6), the
 * calibration losses of every sampled mask (random search, Figure 5), or,
 * for width pruning, the channels every block keeps.
 *
 * N:M decisions carry the scheme and its groups of teacher layers, so
 * recovery can align each pruned local structure with the teacher group it
 * replaced (packages/recovery Alignment.fromDecision).
 */
import { Schema } from "effect"
import { Kept } from "./Width.ts"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** One logged iteration of mask learning: the decision the EMA gates gave then. */
export const Snapshot = Schema.Struct({
  /** Iterations done when it was taken (0: the uniform start). */
  step: Index,
  /** Teacher indices of the pruned model's layers, ascending. */
  kept: Schema.Array(Index),
  /** Per kept layer: the probability of the candidate that put it there (1 for trailing layers outside every group). */
  probability: Schema.Array(Schema.Finite)
})
export type Snapshot = typeof Snapshot.Type

export const Pick = Schema.Struct({
  /** Which sample (its index in the search). */
  index: Index,
  kept: Schema.Array(Index),
  loss: Schema.Finite
})
export type Pick = typeof Pick.Type

/** Random search: every sampled mask's calibration loss and the three picks. */
export const Samples = Schema.Struct({
  /** Calibration loss of each sample with a finite loss, in sample order. */
  losses: Schema.Array(Schema.Finite),
  /** Samples whose loss was not finite (left out of `losses` and of the picks). */
  skipped: Schema.Array(Index),
  min: Pick,
  median: Pick,
  max: Pick
})
export type Samples = typeof Samples.Type

/**
 * Width pruning (Diff-Pruning): every block stays and the DiT narrows to the
 * kept channels (Width.ts); the prune-export stage cuts the teacher to them.
 */
export const WidthDecision = Schema.Struct({
  /** The share of the teacher's parameters the target removes. */
  ratio: Schema.Finite,
  /** The share of every width kept (Width.forRatio). */
  share: Schema.Finite,
  /** Parameters of the narrower DiT. */
  parameters: Index,
  kept: Kept,
  /** The chain steps the diffusion-loss gradient was accumulated over, in order, and the loss at each. */
  steps: Schema.Array(Index),
  losses: Schema.Array(Schema.Finite)
})
export type WidthDecision = typeof WidthDecision.Type

export const PruneDecision = Schema.Struct({
  /** The Pruner method's name. */
  method: Schema.String,
  teacherDepth: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Teacher block indices kept, ascending; the pruned model's block i is teacher block kept[i]. */
  kept: Schema.Array(Index),
  /** N:M scheme of the decision, when it was made in local groups. */
  scheme: Schema.optional(Schema.String),
  /** The scheme's groups of teacher layers (trailing layers outside every group are kept whole). */
  groups: Schema.optional(Schema.Array(Schema.Array(Index))),
  /** Per teacher block, what the method ranked by: the highest are kept. */
  scores: Schema.optional(Schema.Array(Schema.Finite)),
  /** What the scores are, e.g. "1 − cosine similarity of block input and output". */
  measure: Schema.optional(Schema.String),
  /** Learnable: per group, each candidate's probability softmax(scaling × EMA logits). */
  probabilities: Schema.optional(Schema.Array(Schema.Array(Schema.Finite))),
  /** Learnable: mean over groups of the largest candidate probability. */
  confidence: Schema.optional(Schema.Finite),
  /** Learnable: the decision at every logged iteration (Figure 6). */
  history: Schema.optional(Schema.Array(Snapshot)),
  /** Random search (Figure 5, Table 3). */
  samples: Schema.optional(Samples),
  /** Width pruning: the narrower DiT's channels (then `kept` is every block). */
  width: Schema.optional(WidthDecision),
  /** Calibration loss of the pruned model (Table 3), set by the prune stage; absent when not finite. */
  calibrationLoss: Schema.optional(Schema.Finite)
}).check(Schema.makeFilter((d) => {
  const issues: Array<string> = []
  if (d.kept.length === 0) issues.push("no block kept")
  d.kept.forEach((k, i) => {
    if (k >= d.teacherDepth) issues.push(`kept block ${k} is not in 0..${d.teacherDepth - 1}`)
    if (i > 0 && k <= d.kept[i - 1]!) issues.push(`kept blocks must be ascending and distinct, got [${d.kept}]`)
  })
  if (d.scores !== undefined && d.scores.length !== d.teacherDepth) {
    issues.push(`${d.scores.length} scores for ${d.teacherDepth} blocks`)
  }
  if ((d.scheme === undefined) !== (d.groups === undefined)) issues.push("scheme and groups go together")
  if (d.width !== undefined && d.kept.length !== d.teacherDepth) issues.push("a width decision keeps every block")
  if (d.width !== undefined && d.width.steps.length !== d.width.losses.length) issues.push("one loss per accumulated step")
  return issues
}))
export type PruneDecision = typeof PruneDecision.Type
