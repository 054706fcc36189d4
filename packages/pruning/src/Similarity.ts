/**
 * Baselines that rank blocks by how much they change their input (Tables 1
 * and 3), measured on the calibration set's noised inputs:
 *
 * - ShortGPT (Men et al.): Block Influence = 1 − mean cosine similarity
 *   between a block's input and output tokens; the blocks most similar to
 *   identity are removed, and the last block never is.
 * - Flux-Lite: mean squared difference between a block's input and output;
 *   the lowest are removed.
 *
 * Both means run over tokens and calibration samples (float64 on the host).
 */
import { Effect, Schema } from "effect"
import { CalibrationLoss } from "@tinyfusion/eval"
import { Compute, type ComputeError, type ParamTree, tf } from "@tinyfusion/tensor"
import type { BlockStack } from "./BlockStack.ts"
import * as Pruner from "./Pruner.ts"
import * as Selection from "./Selection.ts"

export interface Measures {
  /** Per block: mean cosine similarity of input and output tokens. */
  readonly cosine: ReadonlyArray<number>
  /** Per block: mean over tokens of the mean squared difference of input and output. */
  readonly mse: ReadonlyArray<number>
}

/** torch.nn.functional.cosine_similarity's eps: each norm is clamped to it. */
const eps = 1e-8

/** Both measures of every block over the calibration set, `batchSize` samples per forward. */
export const measure = Effect.fn("Similarity.measure")(function*(
  stack: BlockStack,
  params: ParamTree.ParamTree,
  set: CalibrationLoss.CalibrationSet,
  batchSize = 64
): Effect.fn.Return<Measures, ComputeError, Compute> {
  const compute = yield* Compute
  const n = set.shape[0]
  const cosine = new Float64Array(stack.depth)
  const mse = new Float64Array(stack.depth)
  // Tokens seen by each block (a MAR's encoder blocks see fewer than its decoder blocks).
  const tokens = new Float64Array(stack.depth)
  for (let from = 0; from < n; from += batchSize) {
    const to = Math.min(n, from + batchSize)
    const { sums, counts } = yield* compute.scoped(Effect.gen(function*() {
      const { x, draws } = stack.slice(set, from, to)
      const blocks = stack.hidden(params, x, draws)
      // Per block: summed cosine and summed per-token MSE, one read for all blocks.
      const rows = blocks.map(({ input, output }) => {
        const dot = tf.sum(tf.mul(input, output), -1)
        const norms = tf.mul(tf.maximum(tf.norm(input, "euclidean", -1), eps), tf.maximum(tf.norm(output, "euclidean", -1), eps))
        return tf.stack([tf.sum(tf.div(dot, norms)), tf.sum(tf.mean(tf.squaredDifference(output, input), -1))])
      })
      return { sums: yield* compute.read(tf.stack(rows)), counts: blocks.map(({ input }) => input.shape[0] * input.shape[1]) }
    }))
    for (let i = 0; i < stack.depth; i++) {
      cosine[i] += sums[2 * i]!
      mse[i] += sums[2 * i + 1]!
      tokens[i] += counts[i]!
    }
  }
  return { cosine: Array.from(cosine, (s, i) => s / tokens[i]!), mse: Array.from(mse, (s, i) => s / tokens[i]!) }
})

const method = (
  name: string,
  description: string,
  measureName: string,
  score: (m: Measures) => ReadonlyArray<number>,
  protect: (depth: number) => ReadonlyArray<number>
) =>
  Pruner.make({
    name,
    description,
    module: import.meta.url,
    options: Schema.Struct({}),
    evidence: Selection.Scores,
    prune: Effect.fn(`Similarity.${name}`)(function*(request: Pruner.Request<{}>) {
      const measures = yield* measure(request.stack, request.params, request.calibration)
      const scores = score(measures)
      return {
        kept: Selection.top(scores, request.target, protect(request.stack.depth)),
        evidence: { scores: [...scores], measure: measureName }
      }
    })
  })

export const shortGpt = method(
  "shortgpt",
  "ShortGPT: remove the blocks whose output is most similar (cosine) to their input; never the last",
  "1 − cosine similarity of block input and output",
  (m) => m.cosine.map((c) => 1 - c),
  (depth) => [depth - 1]
)

export const fluxLite = method(
  "flux-lite",
  "Flux-Lite: remove the blocks with the lowest MSE between their input and output",
  "MSE of block input and output",
  (m) => m.mse,
  () => []
)
