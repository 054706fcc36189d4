/**
 * Convolutional layers for the small networks of this package, as pure
 * functions of PyTorch-layout weights (Conv2d [O, I, k, k], ConvTranspose2d
 * [I, O, k, k], Linear [out, in]) on NHWC activations.
 *
 * tfjs's wasm backend has no Conv2DBackpropFilter kernel, and its
 * Conv2DBackpropInput is a slow reference loop, so `conv2d` carries its own
 * gradient made of forward convolutions (fast everywhere, XNNPACK on wasm):
 * the input gradient is the output gradient convolved with the flipped
 * kernel, and the kernel gradient is a convolution of the input with the
 * output gradient, the batch taking the place of the channels.
 * Stride-2 layers are kernel = stride = 2, written as space-to-depth (and
 * back) around a 1×1 convolution.
 */
import { Rng, tf } from "@tinyfusion/tensor"

/** Stride-1 "same" convolution of x [N,H,W,I] by a kernel [k,k,I,O] (odd k). */
const convSame = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
  const [x, kernel, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc]
  save([x, kernel])
  return {
    value: tf.conv2d(x as tf.Tensor4D, kernel as tf.Tensor4D, 1, "same"),
    gradFunc: (dy: tf.Tensor | Array<tf.Tensor>, saved: Array<tf.Tensor>) => {
      const g = dy as tf.Tensor4D
      const [input, k] = saved as [tf.Tensor4D, tf.Tensor4D]
      const p = (k.shape[0] - 1) / 2
      const flipped = tf.transpose(tf.reverse(k, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D
      const dx = tf.conv2d(g, flipped, 1, "same")
      const padded = p === 0 ? input : tf.pad(input, [[0, 0], [p, p], [p, p], [0, 0]])
      const byChannel = tf.transpose(padded, [3, 1, 2, 0]) as tf.Tensor4D
      const gradAsKernel = tf.transpose(g, [1, 2, 0, 3]) as tf.Tensor4D
      const dk = tf.transpose(tf.conv2d(byChannel, gradAsKernel, 1, "valid"), [1, 2, 0, 3])
      return [dx, dk]
    }
  }
}) as (x: tf.Tensor, kernel: tf.Tensor) => tf.Tensor4D

export type Conv = {
  readonly weight: tf.Tensor
  readonly bias: tf.Tensor
}

/** nn.Conv2d(I, O, k, padding = k // 2) with weight [O, I, k, k]. */
export const conv2d = (x: tf.Tensor, p: Conv): tf.Tensor4D =>
  tf.add(convSame(x, tf.transpose(p.weight, [2, 3, 1, 0])), p.bias)

const spaceToDepth = (x: tf.Tensor4D): tf.Tensor4D => {
  const [n, h, w, c] = x.shape
  return tf.reshape(tf.transpose(tf.reshape(x, [n, h / 2, 2, w / 2, 2, c]), [0, 1, 3, 2, 4, 5]), [n, h / 2, w / 2, 4 * c])
}

const depthToSpace = (x: tf.Tensor4D, c: number): tf.Tensor4D => {
  const [n, h, w] = x.shape
  return tf.reshape(tf.transpose(tf.reshape(x, [n, h, w, 2, 2, c]), [0, 1, 3, 2, 4, 5]), [n, 2 * h, 2 * w, c])
}

/** nn.Conv2d(I, O, kernel_size = 2, stride = 2) with weight [O, I, 2, 2]. */
export const down = (x: tf.Tensor4D, p: Conv): tf.Tensor4D => {
  const [o, i] = p.weight.shape as [number, number]
  const kernel = tf.reshape(tf.transpose(p.weight, [2, 3, 1, 0]), [1, 1, 4 * i, o])
  return tf.add(convSame(spaceToDepth(x), kernel), p.bias)
}

/** nn.ConvTranspose2d(I, O, kernel_size = 2, stride = 2) with weight [I, O, 2, 2]. */
export const up = (x: tf.Tensor4D, p: Conv): tf.Tensor4D => {
  const [i, o] = p.weight.shape as [number, number]
  const kernel = tf.reshape(tf.transpose(p.weight, [0, 2, 3, 1]), [1, 1, i, 4 * o])
  return tf.add(depthToSpace(convSame(x, kernel), o), p.bias)
}

/** nn.Linear with weight [out, in]. */
export const linear = (x: tf.Tensor, p: Conv): tf.Tensor2D => tf.add(tf.matMul(x as tf.Tensor2D, p.weight as tf.Tensor2D, false, true), p.bias)

export const silu = <T extends tf.Tensor>(x: T): T => tf.mul(x, tf.sigmoid(x))

/**
 * PyTorch's default initialisation of Conv2d, ConvTranspose2d and Linear:
 * weight and bias uniform on ±1/√fan_in (kaiming_uniform with a = √5), fan_in
 * being weight.shape[1] × kernel area. Each parameter draws from its own
 * sub-stream, named by its key, so adding a layer leaves the others' values.
 */
export function init(stream: Rng.Stream, key: string, weightShape: ReadonlyArray<number>, biasSize: number): Conv {
  const fanIn = weightShape.slice(1).reduce((a, b) => a * b, 1)
  const bound = 1 / Math.sqrt(fanIn)
  const draw = (name: string, shape: ReadonlyArray<number>) =>
    tf.tidy(() => tf.mul(tf.sub(tf.mul(Rng.uniformTensor(Rng.child(stream, `${key}.${name}`), 0, shape), 2), 1), bound))
  return { weight: draw("weight", weightShape), bias: draw("bias", [biasSize]) }
}
