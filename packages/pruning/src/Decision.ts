/**
 * What a pruning decides: the teacher blocks kept, with the scheme and its
 * groups when it was decided in N:M local groups (so recovery can align each
 * pruned local structure with the teacher group it replaced), the pruned
 * model's calibration loss, and the method's evidence — whatever its own
 * Schema says (per-block scores of a baseline, candidate probabilities and
 * their history for mask learning, every sampled mask's loss for random
 * search); decode it with the method's `evidence` Schema.
 */
import { Schema } from "effect"
import * as Scheme from "./Scheme.ts"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const PruneDecision = Schema.Struct({
  /** The Pruner method's name. */
  method: Schema.String,
  teacherDepth: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Teacher block indices kept, ascending; the pruned model's block i is teacher block kept[i]. */
  kept: Schema.Array(Index),
  /** N:M scheme of the decision, when it was made in local groups. */
  scheme: Schema.optional(Scheme.Scheme),
  /** The scheme's groups of teacher layers (trailing layers outside every group are kept whole). */
  groups: Schema.optional(Schema.Array(Schema.Array(Index))),
  /** Calibration loss of the pruned model (Table 3); absent when not finite. */
  calibrationLoss: Schema.optional(Schema.Finite),
  /** The method's evidence, encoded by its `evidence` Schema. */
  evidence: Schema.Json
}).check(Schema.makeFilter((d) => {
  const issues: Array<string> = []
  if (d.kept.length === 0) issues.push("no block kept")
  d.kept.forEach((k, i) => {
    if (k >= d.teacherDepth) issues.push(`kept block ${k} is not in 0..${d.teacherDepth - 1}`)
    if (i > 0 && k <= d.kept[i - 1]!) issues.push(`kept blocks must be ascending and distinct, got [${d.kept}]`)
  })
  if ((d.scheme === undefined) !== (d.groups === undefined)) issues.push("scheme and groups go together")
  return issues
}))
export type PruneDecision = typeof PruneDecision.Type

