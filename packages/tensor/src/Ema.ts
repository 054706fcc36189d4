/**
 * Exponential moving average of parameters, as DiT's update_ema:
 * ema ← decay·ema + (1 − decay)·params.
 */
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

export const update = (ema: ParamTree.ParamTree, params: ParamTree.ParamTree, decay: number): ParamTree.ParamTree =>
  ParamTree.zipWith([ema, params], ([e, p]) => tf.add(tf.mul(e!, decay), tf.mul(p!, 1 - decay))) as ParamTree.ParamTree
