/**
 * Exponential moving average of parameters, as DiT's update_ema:
 * ema ← decay·ema + (1 − decay)·params. On wasm one kernel per tensor, with
 * the same float32 roundings (and so the same bits) as the composed ops.
 */
import * as FusedKernels from "./FusedKernels.ts"
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

export const update = (ema: ParamTree.ParamTree, params: ParamTree.ParamTree, decay: number): ParamTree.ParamTree => {
  const fused = FusedKernels.active()
  return ParamTree.zipWith([ema, params], ([e, p]) =>
    fused
      ? FusedKernels.runKernel(FusedKernels.names.ema, { e: e!, p: p! }, { decay, oneMinusDecay: 1 - decay })
      : tf.add(tf.mul(e!, decay), tf.mul(p!, 1 - decay))) as ParamTree.ParamTree
}
