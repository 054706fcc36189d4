/**
 * Oracle (BK-SDM's hand-made rule, Tables 1 and 3): keep the first and the
 * last block and space the rest uniformly (Selection.uniform). It reads no
 * weights and no data.
 */
import { Effect, Schema } from "effect"
import * as Pruner from "./Pruner.ts"
import * as Selection from "./Selection.ts"

export const method = Pruner.make({
  name: "oracle",
  description: "Oracle (BK-SDM): keep the first and last block, the rest uniformly spaced",
  module: import.meta.url,
  options: Schema.Struct({}),
  evidence: Schema.Struct({}),
  prune: Effect.fn("Oracle.prune")(function*(request: Pruner.Request<{}>) {
    const { stack, target } = request
    if (target.scheme !== undefined) {
      return yield* new Pruner.UnsupportedTarget({ method: "oracle", target: Selection.describe(target), reason: "it keeps a count of blocks, not N of every M" })
    }
    if (target.keep < 2) {
      return yield* new Pruner.UnsupportedTarget({ method: "oracle", target: Selection.describe(target), reason: "it keeps the first and the last block" })
    }
    return { kept: Selection.uniform(stack.depth, target.keep), evidence: {} }
  })
})
