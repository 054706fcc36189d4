/**
 * AdamW with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW:
 *   p ← p − lr·wd·p;  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
 *   p ← p − lr·(m / (1−β1ᵗ)) / (√v / √(1−β2ᵗ) + ε).
 * Parameters are split into named groups, each with its own learning rate and
 * weight decay (e.g. TinyFusion's gates at 1e-3 and LoRA at 1e-4, or MAR's
 * decayed matrices beside its undecayed norms, biases and head).
 * Pure: returns new params and state; the caller releases the old ones.
 * On wasm each parameter's update (with clipping's factor and the EMA, when
 * given) is one kernel that rounds every operation to float32 as the composed
 * ops do, so both give the same bits.
 */
import * as Ema from "./Ema.ts"
import * as FusedKernels from "./FusedKernels.ts"
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

export interface Group {
  readonly name: string
  /** Which parameters (dotted key, shape) belong to this group; the first matching group wins. */
  readonly includes: (key: string, shape: ReadonlyArray<number>) => boolean
  readonly lr: number
  readonly weightDecay: number
}

export interface Config {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly groups: ReadonlyArray<Group>
}

export const defaults = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const

/** One group for every parameter. */
export const single = (lr: number, weightDecay = 0): Config => ({
  ...defaults,
  groups: [{ name: "all", includes: () => true, lr, weightDecay }]
})

/**
 * timm's add_weight_decay as MAE and MAR call it (util/misc.py): no decay on
 * 1-D tensors (norm weights, biases), on keys ending in ".bias", and on keys
 * containing any of `containing` (MAR: "diffloss", its whole head).
 */
export const undecayed = (containing: ReadonlyArray<string>) => (key: string, shape: ReadonlyArray<number>): boolean =>
  shape.length <= 1 || key.endsWith(".bias") || containing.some((c) => key.includes(c))

/** Two groups at one learning rate: `exempt` parameters without weight decay ("no-decay"), the rest with it ("decay"). */
export const decoupled = (lr: number, weightDecay: number, exempt: Group["includes"]): ReadonlyArray<Group> => [
  { name: "no-decay", includes: exempt, lr, weightDecay: 0 },
  { name: "decay", includes: () => true, lr, weightDecay }
]

export interface State {
  readonly step: number
  readonly m: ParamTree.ParamTree
  readonly v: ParamTree.ParamTree
}

/** Zero moments shaped like the trainable tree. */
export const init = (params: ParamTree.ParamTree): State => ({
  step: 0,
  m: ParamTree.mapLeaves(params, (p) => tf.zerosLike(p)),
  v: ParamTree.mapLeaves(params, (p) => tf.zerosLike(p))
})

export const groupOf = (config: Config, key: string, shape: ReadonlyArray<number>): Group => {
  const group = config.groups.find((g) => g.includes(key, shape))
  if (group === undefined) throw new Error(`parameter ${key} is in no optimiser group`)
  return group
}

export interface Options<M extends ParamTree.ParamTree> {
  /** Multiplies every group's learning rate: a schedule's value at this step, relative to the base rates. */
  readonly lrScale?: number | undefined
  /** Multiplies every gradient: global-norm clipping's factor, applied inside the update rather than as a pass of its own. */
  readonly gradScale?: tf.Scalar | undefined
  /** An EMA of some or all of the parameters, moved toward the updated ones as Ema.update does (on wasm in the same kernel). */
  readonly ema?: { readonly tree: M; readonly decay: number } | undefined
}

export interface Next<T extends ParamTree.ParamTree, M extends ParamTree.ParamTree> {
  readonly params: T
  readonly state: State
  /** The moved EMA, when `options.ema` was given. */
  readonly ema: M | undefined
}

/** One update of `params` by `grads`. */
export function update<T extends ParamTree.ParamTree, M extends ParamTree.ParamTree = ParamTree.ParamTree>(
  config: Config,
  state: State,
  params: T,
  grads: T,
  options: Options<M> = {}
): Next<T, M> {
  const { lrScale = 1, gradScale, ema } = options
  const t = state.step + 1
  const bc1 = 1 - config.beta1 ** t
  const bc2 = 1 - config.beta2 ** t
  const byKey = (tree: ParamTree.ParamTree, what: string) => {
    const map = new Map(ParamTree.flattenTensors(tree))
    return (key: string) => {
      const x = map.get(key)
      if (x === undefined) throw new Error(`AdamW: no ${what} for parameter ${key}`)
      return x
    }
  }
  const grad = byKey(grads, "gradient")
  const first = byKey(state.m, "first moment")
  const second = byKey(state.v, "second moment")
  const next: Array<[string, tf.Tensor]> = []
  const m1s: Array<[string, tf.Tensor]> = []
  const v1s: Array<[string, tf.Tensor]> = []
  const fused = FusedKernels.active()
  const averaged = new Map(ema === undefined ? [] : ParamTree.flattenTensors(ema.tree))
  const keys = new Set(ParamTree.flattenTensors(params).map(([k]) => k))
  for (const key of averaged.keys()) if (!keys.has(key)) throw new Error(`EMA: no parameter ${key}`)
  const e1s: Array<[string, tf.Tensor]> = []
  for (const [key, p] of ParamTree.flattenTensors(params)) {
    const g = grad(key)
    const group = groupOf(config, key, p.shape)
    const lr = group.lr * lrScale
    if (fused) {
      const e = averaged.get(key)
      const inputs = { p, g, m: first(key), v: second(key), ...(gradScale === undefined ? {} : { gradScale }), ...(e === undefined ? {} : { e }) }
      const [p1, m1, v1, e1] = tf.engine().runKernel(FusedKernels.names.adamw, inputs, {
        beta1: config.beta1,
        oneMinusBeta1: 1 - config.beta1,
        beta2: config.beta2,
        oneMinusBeta2: 1 - config.beta2,
        sqrtBc2: Math.sqrt(bc2),
        eps: config.eps,
        step: lr / bc1,
        decay: group.weightDecay === 0 ? 1 : 1 - lr * group.weightDecay,
        ...(ema === undefined ? {} : { emaDecay: ema.decay, oneMinusEmaDecay: 1 - ema.decay })
      }) as Array<tf.Tensor>
      next.push([key, p1!])
      m1s.push([key, m1!])
      v1s.push([key, v1!])
      if (e1 !== undefined) e1s.push([key, e1])
      continue
    }
    const decayed = group.weightDecay === 0 ? p : tf.mul(p, 1 - lr * group.weightDecay)
    const gs = gradScale === undefined ? g : tf.mul(g, gradScale)
    const m1 = tf.add(tf.mul(first(key), config.beta1), tf.mul(gs, 1 - config.beta1))
    const v1 = tf.add(tf.mul(second(key), config.beta2), tf.mul(tf.square(gs), 1 - config.beta2))
    const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(bc2)), config.eps)
    next.push([key, tf.sub(decayed, tf.mul(tf.div(m1, denom), lr / bc1))])
    m1s.push([key, m1])
    v1s.push([key, v1])
  }
  const tree = (entries: Array<[string, tf.Tensor]>) => ParamTree.unflatten(entries) as ParamTree.ParamTree
  const nextParams = ParamTree.rebuild(params, next)
  const nextEma = ema === undefined ? undefined : fused ? ParamTree.rebuild(ema.tree, e1s) : Ema.update(ema.tree, nextParams, ema.decay)
  return { params: nextParams, state: { step: t, m: tree(m1s), v: tree(v1s) }, ema: nextEma }
}
