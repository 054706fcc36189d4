/**
 * Distillation losses for recovery (paper §4.4, supplementary §8).
 * Logits KD matches the student's output to the teacher's; RepKD matches
 * hidden states of aligned layers; Masked RepKD ignores the massive
 * activations: per sample, μ and σ over all tokens × channels, computed
 * separately for student and teacher, and an element counts only where both
 * lie within kσ of their mean.
 */
import { Gradients, tf } from "@tinyfusion/tensor"

/** MSE between student and teacher outputs (all output channels: ε and the variance interpolation). */
export const outputKd = (student: tf.Tensor, teacher: tf.Tensor): tf.Scalar =>
  tf.tidy(() => tf.mean(tf.squaredDifference(student, teacher)))

/**
 * 1 where |x − μ| < kσ, with μ, σ (population) per sample over every
 * non-batch element; 0 elsewhere. A constant for the gradient.
 */
export const withinSigma = (x: tf.Tensor, k: number): tf.Tensor =>
  Gradients.detached((u) =>
    tf.tidy(() => {
      const axes = u.shape.slice(1).map((_, i) => i + 1)
      const { mean, variance } = tf.moments(u, axes, true)
      return tf.cast(tf.less(tf.abs(tf.sub(u, mean)), tf.mul(tf.sqrt(variance), k)), "float32")
    })
  )(x)

/**
 * Mean squared error over the elements both tensors keep (all of them when k
 * is undefined: plain RepKD).
 */
export const hiddenLoss = (student: tf.Tensor, teacher: tf.Tensor, k: number | undefined): tf.Scalar =>
  tf.tidy(() => {
    const sq = tf.squaredDifference(student, teacher)
    if (k === undefined) return tf.mean(sq)
    const keep = tf.mul(withinSigma(student, k), withinSigma(teacher, k))
    return tf.div(tf.sum(tf.mul(sq, keep)), tf.maximum(tf.sum(keep), 1))
  })

/** The representation term: hidden losses summed over aligned (student, teacher) pairs. */
export const repLoss = (
  pairs: ReadonlyArray<readonly [student: tf.Tensor, teacher: tf.Tensor]>,
  k: number | undefined
): tf.Scalar => tf.tidy(() => Gradients.sum(pairs.map(([s, t]) => hiddenLoss(s, t, k))) as tf.Scalar)
