/**
 * Exponential moving average of parameters, as DiT's update_ema:
 * ema ← decay·ema + (1 − decay)·params, for the parameters the EMA tree
 * holds (an EMA may track some of the trained tensors, e.g. the gates of
 * mask learning).
 */
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

export const update = <T extends ParamTree.ParamTree>(ema: T, params: ParamTree.ParamTree, decay: number): T => {
  const current = new Map(ParamTree.flattenTensors(params))
  return ParamTree.mapLeaves(ema, (e, key) => {
    const p = current.get(key)
    if (p === undefined) throw new Error(`EMA: no parameter ${key}`)
    return tf.add(tf.mul(e, decay), tf.mul(p, 1 - decay))
  })
}
