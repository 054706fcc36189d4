/**
 * The registry of pruning methods by name. It is a Context reference whose
 * default holds the built-in methods, so nothing needs providing to use
 * them; `Pruners.layer([...])` adds methods to whatever registry is current
 * (like Logger.layer with mergeWithExisting). Adding a pruner is one layer,
 * with no package edited:
 *
 * ```ts
 * const WeightNorm: Pruner.Method = { name: "weight-norm", description: "…", prune: … }
 * program.pipe(Effect.provide(Pruners.layer([WeightNorm])))
 * ```
 *
 * Layers stack when one is provided to the other (or Effect.provide is
 * applied once per layer); a later method with a known name replaces it.
 */
import { Context, Effect, Layer, Schema } from "effect"
import * as DiffPruning from "./DiffPruning.ts"
import * as Learnable from "./Learnable.ts"
import * as Oracle from "./Oracle.ts"
import type * as Pruner from "./Pruner.ts"
import * as RandomSearch from "./RandomSearch.ts"
import * as Sensitivity from "./Sensitivity.ts"
import * as Similarity from "./Similarity.ts"

export type Registry = ReadonlyMap<string, Pruner.Method>

const byName = (methods: ReadonlyArray<Pruner.Method>): Registry => new Map(methods.map((m) => [m.name, m]))

/** TinyFusion's learnable method and the baselines of Tables 1 and 3 (Diff-Pruning: Table 1's width pruning). */
export const builtin: Registry = byName([
  Learnable.method,
  Similarity.shortGpt,
  Similarity.fluxLite,
  Sensitivity.method,
  Oracle.method,
  RandomSearch.min,
  RandomSearch.median,
  RandomSearch.max,
  DiffPruning.method
])

export const Pruners = Context.Reference<Registry>("@tinyfusion/pruning/Pruners", { defaultValue: () => builtin })

/** Adds methods to the current registry. */
export const layer = (methods: ReadonlyArray<Pruner.Method>): Layer.Layer<never> =>
  Layer.effect(Pruners, Effect.map(Pruners, (current) => new Map([...current, ...byName(methods)])))

export class UnknownPruner extends Schema.TaggedError<UnknownPruner>()("UnknownPruner", {
  method: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `no pruner named "${this.method}"; known: ${this.known.join(", ")}`
  }
}

/** The method of a name, from the current registry. */
export const get = Effect.fn("Pruners.get")(function*(name: string) {
  const registry = yield* Pruners
  const method = registry.get(name)
  if (method === undefined) return yield* new UnknownPruner({ method: name, known: [...registry.keys()].sort() })
  return method
})
