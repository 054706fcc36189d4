/**
 * A pruner added from outside the packages (README "Adding a pruner"): keep
 * the blocks whose parameters have the largest L2 norm. It is a
 * `Pruner.Method` value and one layer that registers it; the prune stage
 * then runs it by name ("weight-norm"), for a keep count or an N:M scheme.
 */
import { Effect } from "effect"
import { type Pruner, Pruners, Selection } from "@tinyfusion/pruning"
import { Compute, Gradients, ParamTree, tf } from "@tinyfusion/tensor"

export const method: Pruner.Method = {
  name: "weight-norm",
  description: "Keep the blocks with the largest L2 norm of their parameters",
  prune: Effect.fn("WeightNorm.prune")(function*(request: Pruner.Request) {
    const compute = yield* Compute
    const { stack, params, target } = request
    const norms = yield* compute.read(compute.tidy(() =>
      tf.stack(Array.from({ length: stack.depth }, (_, i) =>
        tf.sqrt(Gradients.sum(ParamTree.leaves(stack.block(params, i)).map((t) => tf.sum(tf.square(t))))))
      )
    ))
    const scores = Array.from(norms)
    return {
      method: "weight-norm",
      teacherDepth: stack.depth,
      kept: [...Selection.top(scores, target)],
      ...Selection.groupsOf(target, stack.depth),
      scores,
      measure: "L2 norm of the block's parameters"
    }
  })
}

/** Provide this layer and "weight-norm" is a pruner like the built-in ones. */
export const layer = Pruners.layer([method])
