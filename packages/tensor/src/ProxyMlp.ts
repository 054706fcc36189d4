/**
 * The residual MLP stack used to measure a backend: L layers of
 * x ← x + relu(x·Wᵀ + b) over T tokens of width D, trained on an MSE loss.
 * Its matmul mix (plain and transposed products in the backward pass) is
 * the one that dominates a DiT training step, at a size that runs anywhere.
 */
import type * as AdamW from "./AdamW.ts"
import * as Gradients from "./Gradients.ts"
import type * as ParamTree from "./ParamTree.ts"
import * as Rng from "./Rng.ts"
import { tf, tidy } from "./tf.ts"
import * as Update from "./Update.ts"

export interface Shape {
  readonly layers: number
  readonly tokens: number
  readonly width: number
}

export const init = (shape: Shape, seed: number): ParamTree.ParamTree => {
  const s = Rng.stream(seed, "proxy-mlp/init")
  const std = 0.5 / Math.sqrt(shape.width)
  return Array.from({ length: shape.layers }, (_, i) => ({
    weight: tf.mul(Rng.normalTensor(s, i, [shape.width, shape.width]), std),
    bias: tf.zeros([shape.width])
  }))
}

/** A fixed regression batch: inputs and targets of [tokens, width]. */
export const batch = (shape: Shape, seed: number): { readonly x: tf.Tensor2D; readonly y: tf.Tensor2D } => {
  const s = Rng.stream(seed, "proxy-mlp/data")
  return {
    x: Rng.normalTensor(s, 0, [shape.tokens, shape.width]) as tf.Tensor2D,
    y: Rng.normalTensor(s, 1, [shape.tokens, shape.width]) as tf.Tensor2D
  }
}

export const forward = (params: ParamTree.ParamTree, x: tf.Tensor2D): tf.Tensor2D => {
  let h = x
  for (const layer of params as ReadonlyArray<{ weight: tf.Tensor2D; bias: tf.Tensor1D }>) {
    h = tf.add(h, tf.relu(tf.add(tf.matMul(h, layer.weight, false, true), layer.bias)))
  }
  return h
}

export const loss = (params: ParamTree.ParamTree, x: tf.Tensor2D, y: tf.Tensor2D): tf.Scalar =>
  tf.mean(tf.square(tf.sub(forward(params, x), y)))

/** One plain SGD step (the bench's update). */
export const sgdStep = (
  params: ParamTree.ParamTree,
  x: tf.Tensor2D,
  y: tf.Tensor2D,
  lr: number
): { readonly params: ParamTree.ParamTree; readonly loss: tf.Scalar } =>
  tidy(() => {
    const { value, grads } = Gradients.valueAndGrad((p) => loss(p, x, y), params)
    const flatUpdate = (p: ParamTree.ParamTree, g: ParamTree.ParamTree): ParamTree.ParamTree =>
      (p as ReadonlyArray<{ weight: tf.Tensor; bias: tf.Tensor }>).map((layer, i) => {
        const gl = (g as ReadonlyArray<{ weight: tf.Tensor; bias: tf.Tensor }>)[i]!
        return { weight: tf.sub(layer.weight, tf.mul(gl.weight, lr)), bias: tf.sub(layer.bias, tf.mul(gl.bias, lr)) }
      })
    return { params: flatUpdate(params, grads), loss: value }
  })

/** One AdamW step with global-norm clipping (the full optimiser path). */
export const adamwStep = (
  config: AdamW.Config,
  state: AdamW.State,
  params: ParamTree.ParamTree,
  x: tf.Tensor2D,
  y: tf.Tensor2D,
  maxNorm: number
): { readonly params: ParamTree.ParamTree; readonly state: AdamW.State; readonly loss: tf.Scalar } =>
  tidy(() => {
    const next = Update.apply({ optimiser: config, maxGradNorm: maxNorm }, { params, optimiser: state }, (p) => loss(p, x, y))
    return { params: next.state.params, state: next.state.optimiser, loss: next.loss }
  })
