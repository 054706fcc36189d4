/**
 * Exponential moving average of parameters, as DiT's update_ema:
 * ema ← decay·ema + (1 − decay)·params, for the parameters the EMA tree
 * holds (an EMA may track some of the trained tensors, e.g. the gates of
 * mask learning). On wasm one kernel per tensor, with the same float32
 * roundings (and so the same bits) as the composed ops.
 */
import * as FusedKernels from "./FusedKernels.ts"
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

export const update = <T extends ParamTree.ParamTree>(ema: T, params: ParamTree.ParamTree, decay: number): T => {
  const fused = FusedKernels.active()
  const current = new Map(ParamTree.flattenTensors(params))
  return ParamTree.mapLeaves(ema, (e, key) => {
    const p = current.get(key)
    if (p === undefined) throw new Error(`EMA: no parameter ${key}`)
    return fused
      ? FusedKernels.runKernel(FusedKernels.names.ema, { e, p }, { decay, oneMinusDecay: 1 - decay })
      : tf.add(tf.mul(e, decay), tf.mul(p, 1 - decay))
  })
}
