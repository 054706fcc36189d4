/**
 * N:M local pruning schemes (paper §3.2): the layers are split into
 * consecutive groups of M and N layers are kept in each. A group's candidates
 * are all C(M, N) binary rows in lexicographic order of their kept indices,
 * e.g. 2:4 → (0,1), (0,2), (0,3), (1,2), (1,3), (2,3).
 *
 * Depth L need not be a multiple of M: the trailing L mod M layers are always
 * kept (28 → 19 as 2:3 keeps 9·2 + 1 layers).
 */
import { Effect, Schema, SchemaIssue, SchemaTransformation } from "effect"

export class InvalidScheme extends Schema.TaggedError<InvalidScheme>()("InvalidScheme", {
  scheme: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid pruning scheme "${this.scheme}": ${this.reason}`
  }
}

export interface Scheme {
  readonly n: number
  readonly m: number
}

/** The scheme "N:M" names, or why it names none. */
const fromText = (text: string): Scheme | string => {
  const match = /^(\d+):(\d+)$/.exec(text.trim())
  if (match === null) return "expected N:M, e.g. 1:2"
  const n = Number(match[1])
  const m = Number(match[2])
  return n >= 1 && n <= m ? { n, m } : "needs 1 ≤ N ≤ M"
}

export const format = (s: Scheme): string => `${s.n}:${s.m}`

/** A scheme as configs and decisions store it, "N:M" (e.g. "1:2"), decoded to N and M once, at the boundary. */
export const Scheme: Schema.Codec<Scheme, string> = Schema.String.pipe(
  Schema.decodeTo(
    Schema.Struct({ n: Schema.Int, m: Schema.Int }),
    SchemaTransformation.transformEffect({
      decode: (text: string) => {
        const s = fromText(text)
        return typeof s === "string"
          ? Effect.fail(new SchemaIssue.InvalidValue({ message: `pruning scheme "${text}": ${s}` }, text))
          : Effect.succeed(s)
      },
      encode: (s: Scheme) => Effect.succeed(format(s))
    })
  )
)

/** The scheme of a text known to be one (tests, constants); throws InvalidScheme otherwise. */
export const parse = (text: string): Scheme => {
  const s = fromText(text)
  if (typeof s === "string") throw new InvalidScheme({ scheme: text, reason: s })
  return s
}

/** All N-subsets of 0..M−1 in lexicographic order. */
export const candidates = (s: Scheme): ReadonlyArray<ReadonlyArray<number>> => {
  const out: Array<Array<number>> = []
  const pick = (start: number, chosen: Array<number>) => {
    if (chosen.length === s.n) return void out.push([...chosen])
    for (let i = start; i <= s.m - (s.n - chosen.length); i++) pick(i + 1, [...chosen, i])
  }
  pick(0, [])
  return out
}

/** The candidates as binary rows (the paper's m̂^{N:M}). */
export const candidateMatrix = (s: Scheme): ReadonlyArray<ReadonlyArray<0 | 1>> =>
  candidates(s).map((kept) => Array.from({ length: s.m }, (_, i) => (kept.includes(i) ? 1 : 0)))

/** Groups of M consecutive layers of a depth (N plays no part); trailing layers that fill no group are returned apart. */
export const groups = (s: { readonly m: number; readonly n?: number }, depth: number): { readonly groups: ReadonlyArray<ReadonlyArray<number>>; readonly rest: ReadonlyArray<number> } => {
  const count = Math.floor(depth / s.m)
  if (count === 0) {
    throw new InvalidScheme({ scheme: s.n === undefined ? `N:${s.m}` : format({ n: s.n, m: s.m }), reason: `a ${depth}-layer model has no group of ${s.m}` })
  }
  return {
    groups: Array.from({ length: count }, (_, g) => Array.from({ length: s.m }, (_, i) => g * s.m + i)),
    rest: Array.from({ length: depth - count * s.m }, (_, i) => count * s.m + i)
  }
}

/** Layers kept by a scheme on a depth. */
export const keptDepth = (s: Scheme, depth: number): number => Math.floor(depth / s.m) * s.n + (depth % s.m)

/** Kept layer indices for one candidate choice per group. */
export const keptLayers = (s: Scheme, depth: number, choice: ReadonlyArray<number>): ReadonlyArray<number> => {
  const { groups: gs, rest } = groups(s, depth)
  const rows = candidates(s)
  if (choice.length !== gs.length) throw new Error(`${gs.length} groups need ${gs.length} choices, got ${choice.length}`)
  return [...gs.flatMap((g, k) => rows[choice[k]!]!.map((i) => g[i]!)), ...rest]
}
