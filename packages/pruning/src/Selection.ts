/**
 * Which blocks to keep: the target of a pruning (keep k of L blocks, or an
 * N:M scheme), and the selections the baselines share — the k best-scored
 * blocks (or the N best of every group), BK-SDM's uniform keep, and random
 * masks.
 */
import { Schema } from "effect"
import { Rng } from "@tinyfusion/tensor"
import * as Scheme from "./Scheme.ts"

export interface Target {
  /** Blocks kept. */
  readonly keep: number
  /** Local N:M groups, when the decision is made in them. */
  readonly scheme?: Scheme.Scheme
}

export class InvalidTarget extends Schema.TaggedError<InvalidTarget>()("InvalidTarget", {
  depth: Schema.Int,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid pruning target for a ${this.depth}-block model: ${this.reason}`
  }
}

/**
 * The target from a keep count and/or a scheme. With both, the keep count
 * must be what the scheme keeps (28 blocks at 2:3 keep 19).
 */
export function target(depth: number, given: { readonly keep?: number | undefined; readonly scheme?: Scheme.Scheme | undefined }): Target {
  if (given.scheme !== undefined) {
    const scheme = given.scheme
    try {
      Scheme.groups(scheme, depth)
    } catch (e) {
      throw new InvalidTarget({ depth, reason: e instanceof Scheme.InvalidScheme ? e.message : String(e) })
    }
    const keep = Scheme.keptDepth(scheme, depth)
    if (given.keep !== undefined && given.keep !== keep) {
      throw new InvalidTarget({ depth, reason: `scheme ${Scheme.format(scheme)} keeps ${keep} blocks, not ${given.keep}` })
    }
    return { keep, scheme }
  }
  if (given.keep === undefined) throw new InvalidTarget({ depth, reason: "give the blocks to keep or an N:M scheme" })
  if (!Number.isInteger(given.keep) || given.keep < 1 || given.keep > depth) {
    throw new InvalidTarget({ depth, reason: `cannot keep ${given.keep} blocks (1..${depth})` })
  }
  return { keep: given.keep }
}

export const describe = (t: Target): string => (t.scheme === undefined ? `keep ${t.keep}` : `scheme ${Scheme.format(t.scheme)} (keep ${t.keep})`)

/** The scheme and its groups of teacher layers, as a decision records them. */
export const groupsOf = (t: Target, depth: number): { readonly scheme?: Scheme.Scheme; readonly groups?: ReadonlyArray<ReadonlyArray<number>> } =>
  t.scheme === undefined ? {} : { scheme: t.scheme, groups: Scheme.groups(t.scheme, depth).groups }

/** The evidence of a method that ranks blocks: a score per teacher block (the highest are kept) and what it measures. */
export const Scores = Schema.Struct({
  /** Per teacher block, what the method ranked by. */
  scores: Schema.Array(Schema.Finite),
  /** What the scores are, e.g. "1 − cosine similarity of block input and output". */
  measure: Schema.String
})
export type Scores = typeof Scores.Type

/** Indices of `among` by score, highest first; ties go to the earlier block. */
const ranked = (scores: ReadonlyArray<number>, among: ReadonlyArray<number>): Array<number> =>
  [...among].sort((a, b) => scores[b]! - scores[a]! || a - b)

/**
 * The blocks a score ranking keeps: the `keep` highest (in every group the N
 * highest, trailing layers kept), `protect`ed blocks always among them.
 */
export function top(scores: ReadonlyArray<number>, t: Target, protect: ReadonlyArray<number> = []): ReadonlyArray<number> {
  const depth = scores.length
  const boosted = scores.map((s, i) => (protect.includes(i) ? Number.POSITIVE_INFINITY : s))
  if (t.scheme === undefined) {
    return ranked(boosted, Array.from({ length: depth }, (_, i) => i)).slice(0, t.keep).sort((a, b) => a - b)
  }
  const { groups, rest } = Scheme.groups(t.scheme, depth)
  const n = t.scheme.n
  return [...groups.flatMap((g) => ranked(boosted, g).slice(0, n).sort((a, b) => a - b)), ...rest]
}

/**
 * BK-SDM's uniform keep with the first and the last block: round(i·(L−1)/(k−1))
 * for i = 0..k−1 (halves round up). 28 → 14 gives 0, 2, …, 12, 15, 17, …, 27.
 */
export function uniform(depth: number, keep: number): ReadonlyArray<number> {
  if (keep < 2) throw new InvalidTarget({ depth, reason: "a uniform keep with the first and last block needs at least 2 blocks" })
  return Array.from({ length: keep }, (_, i) => Math.round((i * (depth - 1)) / (keep - 1)))
}

/**
 * Random mask `index` of a stream: `keep` blocks uniformly at random, or
 * one uniformly random candidate per group.
 */
export function random(stream: Rng.Stream, index: number, depth: number, t: Target): ReadonlyArray<number> {
  if (t.scheme === undefined) {
    return Array.from(Rng.permutation(stream, index, depth).subarray(0, t.keep)).sort((a, b) => a - b)
  }
  const count = Scheme.groups(t.scheme, depth).groups.length
  const choice = Rng.integers(stream, index, count, 0, Scheme.candidates(t.scheme).length)
  return Scheme.keptLayers(t.scheme, depth, Array.from(choice))
}
