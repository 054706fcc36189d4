/**
 * One parameter update, the step every training loop takes (pre-training,
 * recovery, mask learning, the autoencoder, the feature network, the proxy
 * MLP): the loss's gradients with respect to the trained tree, global-norm
 * clipping (torch's clip_grad_norm_, or none), AdamW at the step's learning
 * rate scale, and the EMA of the tensors an EMA tree tracks. Pure: returns
 * the new state; the caller runs it inside a tidy and releases the old one.
 */
import * as AdamW from "./AdamW.ts"
import * as Gradients from "./Gradients.ts"
import type * as ParamTree from "./ParamTree.ts"
import type { tf } from "./tf.ts"

export interface Settings {
  readonly optimiser: AdamW.Config
  /** Global-norm clip; undefined: no clipping (the norm is still measured). */
  readonly maxGradNorm?: number | undefined
  /** Decay of the EMA; used when the state has an EMA tree. */
  readonly emaDecay?: number | undefined
}

export interface State<T extends ParamTree.ParamTree, M extends ParamTree.ParamTree = ParamTree.ParamTree> {
  /** The trained tensors. */
  readonly params: T
  readonly optimiser: AdamW.State
  /** The EMA of some of the trained tensors (those of its keys), if one is kept. */
  readonly ema?: M
}

export interface Result<T extends ParamTree.ParamTree, M extends ParamTree.ParamTree> {
  readonly state: State<T, M>
  readonly loss: tf.Scalar
  /** The global gradient norm before clipping. */
  readonly gradNorm: tf.Scalar
}

/** The update of `state` on `lossOf`, learning rates scaled by `lrScale` (a schedule's value at the step). */
export function apply<T extends ParamTree.ParamTree, M extends ParamTree.ParamTree = ParamTree.ParamTree>(
  settings: Settings,
  state: State<T, M>,
  lossOf: (params: T) => tf.Scalar,
  lrScale = 1
): Result<T, M> {
  const { value, grads } = Gradients.valueAndGrad(lossOf, state.params)
  const gradNorm = Gradients.globalNorm(grads)
  const clip = settings.maxGradNorm === undefined ? undefined : Gradients.clipScale(gradNorm, settings.maxGradNorm)
  const decay = settings.emaDecay
  if (state.ema !== undefined && decay === undefined) throw new Error("an EMA without a decay")
  const ema = state.ema === undefined || decay === undefined ? undefined : { tree: state.ema, decay }
  const next = AdamW.update(settings.optimiser, state.optimiser, state.params, grads, { lrScale, gradScale: clip, ema })
  return { state: { params: next.params, optimiser: next.state, ...(next.ema === undefined ? {} : { ema: next.ema }) }, loss: value, gradNorm }
}
