/**
 * Gradient utilities: global-norm clipping as torch.nn.utils.clip_grad_norm_
 * (scale every gradient by max_norm / (‖g‖ + 1e-6) when that is below 1), and a
 * finiteness check for NaN/Inf steps.
 */
import * as FusedKernels from "./FusedKernels.ts"
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

/** √(Σ‖g‖²) over the whole tree, as a scalar tensor (on wasm, one kernel sums every square). */
export const globalNorm = (grads: ParamTree.ParamTree): tf.Scalar =>
  tf.tidy(() => {
    const leaves = ParamTree.leaves(grads)
    const squares = FusedKernels.active() && leaves.length > 0
      ? FusedKernels.runKernel(FusedKernels.names.sumSquares, leaves as unknown as tf.NamedTensorMap)
      : sum(leaves.map((g) => tf.sum(tf.square(g))))
    return tf.sqrt(squares) as tf.Scalar
  })

/**
 * Sum of equally shaped tensors by pairwise tf.add. Not tf.addN: its WebGPU
 * kernel binds one buffer per input and returns wrong values past the
 * device's per-stage storage-buffer limit (8 inputs on lavapipe).
 */
export const sum = (xs: ReadonlyArray<tf.Tensor>): tf.Tensor => {
  if (xs.length === 0) throw new Error("sum of no tensors")
  let level = [...xs]
  while (level.length > 1) {
    const next: Array<tf.Tensor> = []
    for (let i = 0; i < level.length; i += 2) next.push(i + 1 < level.length ? tf.add(level[i]!, level[i + 1]!) : level[i]!)
    level = next
  }
  return level[0]!
}

/**
 * The factor global-norm clipping multiplies every gradient by, as torch's
 * clip_grad_norm_: min(maxNorm / (norm + 1e-6), 1). Stays on the device (no
 * sync); AdamW.update applies it.
 */
export const clipScale = (norm: tf.Scalar, maxNorm: number): tf.Scalar =>
  tf.tidy(() => tf.minimum(tf.div(maxNorm, tf.add(norm, 1e-6)), 1))

/**
 * The value of a scalar function of a parameter tree and its gradient with
 * respect to every leaf, as a tree of the same shape (tf.valueAndGrads over
 * the flattened leaves).
 */
export function valueAndGrad<T extends ParamTree.ParamTree>(
  f: (params: T) => tf.Scalar,
  params: T
): { readonly value: tf.Scalar; readonly grads: T } {
  const flat = ParamTree.flattenTensors(params)
  const rebuild = (xs: ReadonlyArray<tf.Tensor>) => ParamTree.rebuild(params, flat.map(([k], i) => [k, xs[i]!] as const))
  const { value, grads } = tf.valueAndGrads((...xs: Array<tf.Tensor>) => f(rebuild(xs)))(flat.map(([, t]) => t))
  return { value: value as tf.Scalar, grads: rebuild(grads) }
}

/** True when every value of the tensor is finite (one device read). */
export const allFinite = async (t: tf.Tensor): Promise<boolean> => {
  const ok = tf.tidy(() => tf.all(tf.isFinite(t)))
  const [v] = await ok.data()
  ok.dispose()
  return v === 1
}

/**
 * f in the forward pass, a zero gradient in the backward pass. tfjs has no
 * stop_gradient, and ops without gradients (comparisons) may not appear on a
 * differentiated path at all; inside this node they are invisible to it.
 */
export const detached = (f: (x: tf.Tensor) => tf.Tensor): ((x: tf.Tensor) => tf.Tensor) =>
  tf.customGrad(((x: tf.Tensor) => ({
    value: f(x),
    gradFunc: () => [tf.zerosLike(x)]
  })) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (x: tf.Tensor) => tf.Tensor

/** x forward, no gradient (torch's .detach()). */
export const stopGradient = detached((x) => tf.clone(x))
