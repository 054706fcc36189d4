/**
 * A pruner added from outside the packages (README "Adding a pruner"): keep
 * the blocks whose parameters have the largest norm. This file is all of it:
 * the method, its options and its evidence; experiments/src/methods.ts finds
 * it, so the suite and `tinyfusion prune --method weight-norm --norm l1` run
 * it by name, for a keep count or an N:M scheme.
 */
import { Effect, Schema } from "effect"
import { Method } from "@tinyfusion/core"
import { Pruner, Selection } from "@tinyfusion/pruning"
import { Compute, Gradients, ParamTree, tf } from "@tinyfusion/tensor"

export const Options = Schema.Struct({
  norm: Method.option(Schema.Literals(["l2", "l1", "max"]), "l2", "Norm of a block's parameters: L2, L1, or the largest magnitude")
})
export type Options = typeof Options.Type

/** One block's parameters reduced by a norm. */
const norms: Record<Options["norm"], (leaves: ReadonlyArray<tf.Tensor>) => tf.Tensor> = {
  l2: (leaves) => tf.sqrt(Gradients.sum(leaves.map((t) => tf.sum(tf.square(t))))),
  l1: (leaves) => Gradients.sum(leaves.map((t) => tf.sum(tf.abs(t)))),
  max: (leaves) => tf.max(tf.stack(leaves.map((t) => tf.max(tf.abs(t)))))
}

export const method = Pruner.make({
  name: "weight-norm",
  description: "Keep the blocks whose parameters have the largest norm",
  module: import.meta.url,
  options: Options,
  evidence: Selection.Scores,
  prune: Effect.fn("WeightNorm.prune")(function*(request: Pruner.Request<Options>) {
    const compute = yield* Compute
    const { stack, params, target, options } = request
    const values = yield* compute.read(compute.tidy(() =>
      tf.stack(Array.from({ length: stack.depth }, (_, i) => norms[options.norm](ParamTree.leaves(stack.block(params, i)))))
    ))
    const scores = Array.from(values)
    return { kept: Selection.top(scores, target), evidence: { scores, measure: `${options.norm} norm of the block's parameters` } }
  })
})
