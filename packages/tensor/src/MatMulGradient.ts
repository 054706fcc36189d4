/**
 * The gradient of BatchMatMul when batch dims broadcast. tfjs's own returns
 * each operand's gradient at the broadcast shape, which its engine then
 * rejects (x [B,T,D] · W [D,O] fails in backprop with "The gradient of input
 * 'b' has shape 'B,D,O'"); this one sums it over the broadcast axes, as the
 * gradient of any broadcasting op does. Without broadcasting it is tfjs's.
 */
import * as tf from "@tensorflow/tfjs"

/** g summed over the axes on which `shape` was broadcast to g's shape. */
const reduceTo = (g: tf.Tensor, shape: ReadonlyArray<number>): tf.Tensor => {
  const axes = tf.broadcast_util.getReductionAxes([...shape], g.shape)
  const summed = axes.length > 0 ? tf.sum(g, axes) : g
  return summed.shape.length === shape.length ? summed : tf.reshape(summed, [...shape])
}

export const batchMatMulGradConfig: tf.GradConfig = {
  kernelName: tf.BatchMatMul,
  inputsToSave: ["a", "b"],
  gradFunc: (dy, saved, attrs) => {
    const [a, b] = saved as [tf.Tensor, tf.Tensor]
    const { transposeA, transposeB } = attrs as unknown as tf.BatchMatMulAttrs
    const dy_ = dy as tf.Tensor
    const [da, db] = !transposeA && !transposeB
      ? [() => tf.matMul(dy_, b, false, true), () => tf.matMul(a, dy_, true, false)]
      : !transposeA && transposeB
      ? [() => tf.matMul(dy_, b, false, false), () => tf.matMul(dy_, a, true, false)]
      : transposeA && !transposeB
      ? [() => tf.matMul(b, dy_, false, true), () => tf.matMul(a, dy_, false, false)]
      : [() => tf.matMul(b, dy_, true, true), () => tf.matMul(dy_, a, true, true)]
    return { a: () => reduceTo(da(), a.shape), b: () => reduceTo(db(), b.shape) }
  }
}
