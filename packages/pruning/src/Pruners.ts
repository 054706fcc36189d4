/**
 * The registry of pruning methods by name (core Method): a Context reference
 * whose default holds the built-in methods, so nothing needs providing to
 * use them; `Pruners.layer([...])` adds methods to whatever registry is
 * current. Adding a pruner is one file, with no package edited:
 *
 * ```ts
 * export const method = Pruner.make({ name: "weight-norm", description: "…", module: import.meta.url, options, evidence, prune })
 * program.pipe(Effect.provide(Pruners.layer([method])))
 * ```
 *
 * Layers stack when one is provided to the other (or Effect.provide is
 * applied once per layer); a later method with a known name replaces it.
 */
import { Method } from "@tinyfusion/core"
import * as DiffPruning from "./DiffPruning.ts"
import * as Learnable from "./Learnable.ts"
import * as Oracle from "./Oracle.ts"
import * as Pruner from "./Pruner.ts"
import * as RandomSearch from "./RandomSearch.ts"
import * as Sensitivity from "./Sensitivity.ts"
import * as Similarity from "./Similarity.ts"

/** TinyFusion's learnable method and the baselines of Tables 1 and 3 (Diff-Pruning: Table 1's width pruning). */
export const registry = Method.registry<Pruner.Method>("@tinyfusion/pruning/Pruners", Pruner.kind, [
  Learnable.method,
  Similarity.shortGpt,
  Similarity.fluxLite,
  Sensitivity.method,
  Oracle.method,
  RandomSearch.method,
  DiffPruning.method
])

export const { builtin, current, layer, get } = registry
