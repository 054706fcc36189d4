/**
 * Differentiable sampling of local masks (paper eq. 4–5): per sample, a hard
 * Gumbel-softmax over (scaling × logits) at temperature τ with a
 * straight-through estimator — one-hot in the forward pass, the softmax's
 * gradient in the backward pass — and the mask as one-hot · candidates.
 */
import { tf } from "@tinyfusion/tensor"
import * as Scheme from "./Scheme.ts"

/** Forward: one-hot of the argmax; backward: identity (the gradient goes to the soft sample). */
const straightThrough = tf.customGrad(((soft: tf.Tensor) => ({
  value: tf.oneHot(tf.argMax(soft, -1), soft.shape.at(-1)!).toFloat(),
  gradFunc: (dy: tf.Tensor) => [dy]
})) as unknown as Parameters<typeof tf.customGrad>[0]) as (soft: tf.Tensor) => tf.Tensor

/**
 * Hard samples [B, G, C] for logits [G, C] and standard Gumbel noise [B, G, C].
 * softmax((scale·logits + g) / τ) decides; its one-hot is what the forward sees.
 */
export const sample = (logits: tf.Tensor2D, noise: tf.Tensor3D, tau: number, scale: number): tf.Tensor3D =>
  tf.tidy(() => straightThrough(tf.softmax(tf.div(tf.add(tf.mul(logits, scale), noise), tau))) as tf.Tensor3D)

/** Probabilities of each group's candidates: softmax(scale · logits), [G, C]. */
export const probabilities = (logits: tf.Tensor2D, scale: number): tf.Tensor2D => tf.softmax(tf.mul(logits, scale))

/**
 * Per-sample layer gates [B, L] from one-hot choices [B, G, C]: each group's
 * one-hot times the candidate matrix; trailing layers outside every group get 1.
 */
export const gates = (onehot: tf.Tensor3D, scheme: Scheme.Scheme, depth: number): tf.Tensor2D =>
  tf.tidy(() => {
    const { groups, rest } = Scheme.groups(scheme, depth)
    const [batch, groupCount] = onehot.shape
    if (groupCount !== groups.length) throw new Error(`${groupCount} groups of choices for ${groups.length} groups of ${scheme.m} layers`)
    const matrix = tf.tensor2d(Scheme.candidateMatrix(scheme).map((r) => [...r]))
    const grouped = tf.reshape(tf.matMul(tf.reshape(onehot, [batch * groupCount, -1]), matrix), [batch, groupCount * scheme.m])
    return (rest.length === 0 ? grouped : tf.concat([grouped, tf.ones([batch, rest.length])], 1)) as tf.Tensor2D
  })
