/**
 * Which teacher hidden state each student layer is distilled towards (RepKD).
 * From a pruning decision: the pruned local structure replaces a group of
 * teacher layers, so the output of the group's last kept layer is aligned with
 * the output of the group's last teacher layer (paper §4.4: "the pruned local
 * structure in the pruned DiT aligns with the output of the original structure
 * in the teacher"). Without groups (baselines), a kept layer stands for the
 * teacher layers up to the next kept one. The reference code's fixed mapping
 * (student i ↔ teacher (i+1)·L/l − 1) is the other option.
 */

export interface Pair {
  /** Student layer whose output is matched. */
  readonly student: number
  /** Teacher layer whose output is the target. */
  readonly teacher: number
}

/**
 * @param kept teacher indices of the student's layers, ascending
 * @param teacherDepth the teacher's depth
 * @param groups the N:M groups of teacher layers the decision was made in, if any
 */
export const fromDecision = (
  kept: ReadonlyArray<number>,
  teacherDepth: number,
  groups?: ReadonlyArray<ReadonlyArray<number>>
): ReadonlyArray<Pair> => {
  if (groups === undefined || groups.length === 0) {
    return kept.map((_, i) => ({ student: i, teacher: (kept[i + 1] ?? teacherDepth) - 1 }))
  }
  const groupOf = new Map(groups.flatMap((g, gi) => g.map((layer) => [layer, gi] as const)))
  return kept.flatMap((layer, i): Array<Pair> => {
    const g = groupOf.get(layer)
    // A layer outside every group (trailing layers kept whole) is aligned with itself.
    if (g === undefined) return [{ student: i, teacher: layer }]
    const lastOfGroup = kept[i + 1] === undefined || groupOf.get(kept[i + 1]!) !== g
    return lastOfGroup ? [{ student: i, teacher: groups[g]!.at(-1)! }] : []
  })
}

/** The reference's fixed mapping for a uniform depth reduction. */
export const fixed = (studentDepth: number, teacherDepth: number): ReadonlyArray<Pair> => {
  if (teacherDepth % studentDepth !== 0) throw new Error(`fixed alignment needs ${teacherDepth} divisible by ${studentDepth}`)
  const ratio = teacherDepth / studentDepth
  return Array.from({ length: studentDepth }, (_, i) => ({ student: i, teacher: (i + 1) * ratio - 1 }))
}
