/**
 * The FID Inception-V3 as ADM's evaluator sees it: the TensorFlow graph
 * `classify_image_graph_def.pb` (2015-12-05), here as pytorch-fid's port of
 * it (FIDInceptionV3, weights `pt_inception-2015-12-05-6726825d.pth`), a pure
 * function of that file's state_dict keys. Beside FeatureNet, which plays its
 * part at mini scale: both provide the `FeatureExtractor` service.
 *
 *   input    8-bit images as floats (ADM feeds uint8 → float32), resized to
 *            299 × 299 by TensorFlow's ResizeBilinear (align_corners = false,
 *            no half-pixel centres), then (x − 128) / 128: the graph's own
 *            preprocessing, not pytorch-fid's (F.interpolate, then 2x − 1)
 *   pool     `pool_3`: the 2048-d average of Mixed_7c (FID, precision, recall)
 *   spatial  `mixed_6/conv`: Mixed_6d's 1×1 branch (conv, BN, ReLU), its first
 *            7 channels flattened in (h, w, c) order: 17 · 17 · 7 = 2023 (sFID)
 *   logits   `softmax/logits/MatMul`: pool · fc.weightᵀ over 1008 classes,
 *            without the bias, as ADM's evaluator takes them (IS)
 *
 * Known differences from the TF graph: convolutions and reductions run in a
 * different order (float32 rounding, ~1e-6 relative per layer); pytorch-fid's
 * port of the weights is otherwise exact. TF's padded average pools exclude
 * the padding from the count, as here and in pytorch-fid's patches; the last
 * block's branch pool is a max pool, a quirk of the graph both keep.
 *
 * `divisor` narrows every layer (1 is the real network; 16 is a toy for tests
 * of the paper path), and `inputSize` is the side images are resized to.
 */
import { Effect, Schema } from "effect"
import { StateDict } from "@tinyfusion/models"
import { type ParamTree, tf } from "@tinyfusion/tensor"

export const Config = Schema.Struct({
  /** Every width divided by this (1, 2, 4, 8 or 16). */
  divisor: Schema.Literals([1, 2, 4, 8, 16]),
  /** Logits (the graph's 1008). */
  classes: Schema.Int,
  /** The side images are resized to (ADM: 299). */
  inputSize: Schema.Int.check(Schema.isGreaterThanOrEqualTo(75))
})
export type Config = typeof Config.Type

export const fid: Config = { divisor: 1, classes: 1008, inputSize: 299 }

/** Channels of the sFID map kept (ADM: mixed_6/conv[..., :7]). */
export const spatialChannels = 7

export const poolDim = (config: Config): number => 2048 / config.divisor

/** Side of the 17 × 17 grid at 299 (stem and the first reduction on `inputSize`). */
export const spatialSide = (config: Config): number => {
  const down = (n: number) => Math.floor((n - 3) / 2) + 1
  return down(down(down(down(config.inputSize) - 2) - 2))
}

export const spatialDim = (config: Config): number => spatialSide(config) ** 2 * spatialChannels

interface Unit {
  readonly name: string
  readonly in: number
  readonly out: number
  readonly kernel: readonly [number, number]
  readonly stride: number
  readonly pad: readonly [number, number]
}

/** The BasicConv2d units of the network in state_dict order, at full width. */
const units = (): ReadonlyArray<Unit> => {
  const out: Array<Unit> = []
  const u = (name: string, i: number, o: number, kernel: number | readonly [number, number], options: { stride?: number; pad?: number | readonly [number, number] } = {}) => {
    const k = typeof kernel === "number" ? ([kernel, kernel] as const) : kernel
    const p = options.pad ?? 0
    out.push({ name, in: i, out: o, kernel: k, stride: options.stride ?? 1, pad: typeof p === "number" ? [p, p] : p })
  }
  u("Conv2d_1a_3x3", 3, 32, 3, { stride: 2 })
  u("Conv2d_2a_3x3", 32, 32, 3)
  u("Conv2d_2b_3x3", 32, 64, 3, { pad: 1 })
  u("Conv2d_3b_1x1", 64, 80, 1)
  u("Conv2d_4a_3x3", 80, 192, 3)
  const a = (name: string, i: number, pool: number) => {
    u(`${name}.branch1x1`, i, 64, 1)
    u(`${name}.branch5x5_1`, i, 48, 1)
    u(`${name}.branch5x5_2`, 48, 64, 5, { pad: 2 })
    u(`${name}.branch3x3dbl_1`, i, 64, 1)
    u(`${name}.branch3x3dbl_2`, 64, 96, 3, { pad: 1 })
    u(`${name}.branch3x3dbl_3`, 96, 96, 3, { pad: 1 })
    u(`${name}.branch_pool`, i, pool, 1)
  }
  a("Mixed_5b", 192, 32)
  a("Mixed_5c", 256, 64)
  a("Mixed_5d", 288, 64)
  u("Mixed_6a.branch3x3", 288, 384, 3, { stride: 2 })
  u("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
  u("Mixed_6a.branch3x3dbl_2", 64, 96, 3, { pad: 1 })
  u("Mixed_6a.branch3x3dbl_3", 96, 96, 3, { stride: 2 })
  const c = (name: string, c7: number) => {
    u(`${name}.branch1x1`, 768, 192, 1)
    u(`${name}.branch7x7_1`, 768, c7, 1)
    u(`${name}.branch7x7_2`, c7, c7, [1, 7], { pad: [0, 3] })
    u(`${name}.branch7x7_3`, c7, 192, [7, 1], { pad: [3, 0] })
    u(`${name}.branch7x7dbl_1`, 768, c7, 1)
    u(`${name}.branch7x7dbl_2`, c7, c7, [7, 1], { pad: [3, 0] })
    u(`${name}.branch7x7dbl_3`, c7, c7, [1, 7], { pad: [0, 3] })
    u(`${name}.branch7x7dbl_4`, c7, c7, [7, 1], { pad: [3, 0] })
    u(`${name}.branch7x7dbl_5`, c7, 192, [1, 7], { pad: [0, 3] })
    u(`${name}.branch_pool`, 768, 192, 1)
  }
  c("Mixed_6b", 128)
  c("Mixed_6c", 160)
  c("Mixed_6d", 160)
  c("Mixed_6e", 192)
  u("Mixed_7a.branch3x3_1", 768, 192, 1)
  u("Mixed_7a.branch3x3_2", 192, 320, 3, { stride: 2 })
  u("Mixed_7a.branch7x7x3_1", 768, 192, 1)
  u("Mixed_7a.branch7x7x3_2", 192, 192, [1, 7], { pad: [0, 3] })
  u("Mixed_7a.branch7x7x3_3", 192, 192, [7, 1], { pad: [3, 0] })
  u("Mixed_7a.branch7x7x3_4", 192, 192, 3, { stride: 2 })
  const e = (name: string, i: number) => {
    u(`${name}.branch1x1`, i, 320, 1)
    u(`${name}.branch3x3_1`, i, 384, 1)
    u(`${name}.branch3x3_2a`, 384, 384, [1, 3], { pad: [0, 1] })
    u(`${name}.branch3x3_2b`, 384, 384, [3, 1], { pad: [1, 0] })
    u(`${name}.branch3x3dbl_1`, i, 448, 1)
    u(`${name}.branch3x3dbl_2`, 448, 384, 3, { pad: 1 })
    u(`${name}.branch3x3dbl_3a`, 384, 384, [1, 3], { pad: [0, 1] })
    u(`${name}.branch3x3dbl_3b`, 384, 384, [3, 1], { pad: [1, 0] })
    u(`${name}.branch_pool`, i, 192, 1)
  }
  e("Mixed_7b", 1280)
  e("Mixed_7c", 2048)
  return out
}

const narrowed = (config: Config) =>
  new Map(units().map((u) => [u.name, { ...u, in: u.in === 3 ? 3 : u.in / config.divisor, out: u.out / config.divisor }] as const))

/** Every key of pytorch-fid's state_dict (without BatchNorm's num_batches_tracked) with its shape. */
export function referenceShapes(config: Config): Array<readonly [string, ReadonlyArray<number>]> {
  const out: Array<readonly [string, ReadonlyArray<number>]> = []
  for (const u of narrowed(config).values()) {
    out.push([`${u.name}.conv.weight`, [u.out, u.in, ...u.kernel]])
    for (const p of ["weight", "bias", "running_mean", "running_var"]) out.push([`${u.name}.bn.${p}`, [u.out]])
  }
  out.push(["fc.weight", [config.classes, poolDim(config)]], ["fc.bias", [config.classes]])
  return out
}

/** The keys a state_dict may hold besides the weights (BatchNorm's step counters). */
export const isBookkeeping = (key: string): boolean => key.endsWith(".num_batches_tracked")

/** A unit with BatchNorm (eps 0.001) folded into its kernel (HWIO) and a shift. */
interface Folded {
  readonly kernel: tf.Tensor4D
  readonly shift: tf.Tensor1D
  readonly stride: number
  readonly pad: readonly [number, number]
}

export interface Prepared {
  readonly config: Config
  readonly units: ReadonlyMap<string, Folded>
  /** fc.weight [classes, pool]. */
  readonly fc: tf.Tensor2D
}

/**
 * The network's weights ready to run: each conv's BatchNorm folded in
 * (kernel · γ/√(var + 0.001), shift β − mean · γ/√(var + 0.001)), kernels in
 * tfjs's HWIO. A pure transform of the reference-keyed tree; dispose with
 * `dispose`.
 */
export function prepare(config: Config, tree: ParamTree.ParamTree): Prepared {
  const get = (path: string) =>
    path.split(".").reduce((node: any, part) => {
      const next = node?.[part]
      if (next === undefined) throw new Error(`no parameter ${path}`)
      return next
    }, tree) as tf.Tensor
  const folded = new Map<string, Folded>()
  for (const u of narrowed(config).values()) {
    const { kernel, shift } = tf.tidy(() => {
      const scale = tf.div(get(`${u.name}.bn.weight`), tf.sqrt(tf.add(get(`${u.name}.bn.running_var`), 0.001)))
      return {
        kernel: tf.mul(tf.transpose(get(`${u.name}.conv.weight`), [2, 3, 1, 0]), scale) as tf.Tensor4D,
        shift: tf.sub(get(`${u.name}.bn.bias`), tf.mul(get(`${u.name}.bn.running_mean`), scale)) as tf.Tensor1D
      }
    })
    folded.set(u.name, { kernel, shift, stride: u.stride, pad: u.pad })
  }
  return { config, units: folded, fc: tf.clone(get("fc.weight")) as tf.Tensor2D }
}

export const dispose = (prepared: Prepared): void => {
  for (const u of prepared.units.values()) tf.dispose([u.kernel, u.shift])
  prepared.fc.dispose()
}

export interface Outputs {
  /** [N, 2048] */
  readonly pool: tf.Tensor2D
  /** [N, 17 · 17 · 7] */
  readonly spatial: tf.Tensor2D
  /** [N, 1008], no bias */
  readonly logits: tf.Tensor2D
}

/** Images [N, S, S, 3] already resized and scaled to [-1, 1] → features. */
export function forward(net: Prepared, x: tf.Tensor4D): Outputs {
  const unit = (name: string, h: tf.Tensor4D): tf.Tensor4D => {
    const u = net.units.get(name)!
    const [ph, pw] = u.pad
    const padding = ph === 0 && pw === 0 ? "valid" : ([[0, 0], [ph, ph], [pw, pw], [0, 0]] as [[number, number], [number, number], [number, number], [number, number]])
    return tf.relu(tf.add(tf.conv2d(h, u.kernel, u.stride, padding), u.shift))
  }
  const maxPool = (h: tf.Tensor4D) => tf.maxPool(h, 3, 2, "valid")
  const cat = (parts: ReadonlyArray<tf.Tensor4D>) => tf.concat(parts as Array<tf.Tensor4D>, 3)
  // 3 × 3, stride 1, padding 1, the padding left out of the count (TF's, count_include_pad = False).
  const averagePool = (h: tf.Tensor4D) => {
    const [, height, width] = h.shape
    const pad = [[0, 0], [1, 1], [1, 1], [0, 0]] as [number, number][]
    const sums = tf.mul(tf.avgPool(tf.pad(h, pad), 3, 1, "valid"), 9)
    const counts = tf.mul(tf.avgPool(tf.pad(tf.ones([1, height, width, 1]), pad) as tf.Tensor4D, 3, 1, "valid"), 9)
    return tf.div(sums, counts) as tf.Tensor4D
  }
  // 3 × 3, stride 1, padding 1 of -inf; the inputs are ReLU outputs, so padding with 0 is the same.
  const maxPoolSame = (h: tf.Tensor4D) => tf.maxPool(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 1, "valid")

  const a = (name: string, h: tf.Tensor4D) =>
    cat([
      unit(`${name}.branch1x1`, h),
      unit(`${name}.branch5x5_2`, unit(`${name}.branch5x5_1`, h)),
      unit(`${name}.branch3x3dbl_3`, unit(`${name}.branch3x3dbl_2`, unit(`${name}.branch3x3dbl_1`, h))),
      unit(`${name}.branch_pool`, averagePool(h))
    ])
  const c = (name: string, h: tf.Tensor4D) => {
    const chain = (prefix: string, n: number) => {
      let y = h
      for (let i = 1; i <= n; i++) y = unit(`${name}.${prefix}_${i}`, y)
      return y
    }
    return cat([unit(`${name}.branch1x1`, h), chain("branch7x7", 3), chain("branch7x7dbl", 5), unit(`${name}.branch_pool`, averagePool(h))])
  }
  const e = (name: string, h: tf.Tensor4D, pool: (h: tf.Tensor4D) => tf.Tensor4D) => {
    const b3 = unit(`${name}.branch3x3_1`, h)
    const d3 = unit(`${name}.branch3x3dbl_2`, unit(`${name}.branch3x3dbl_1`, h))
    return cat([
      unit(`${name}.branch1x1`, h),
      cat([unit(`${name}.branch3x3_2a`, b3), unit(`${name}.branch3x3_2b`, b3)]),
      cat([unit(`${name}.branch3x3dbl_3a`, d3), unit(`${name}.branch3x3dbl_3b`, d3)]),
      unit(`${name}.branch_pool`, pool(h))
    ])
  }

  // Each block in its own tidy: the intermediates of a whole pass would not fit a wasm heap at batch sizes worth timing.
  let h = tf.tidy(() => unit("Conv2d_2b_3x3", unit("Conv2d_2a_3x3", unit("Conv2d_1a_3x3", x))))
  const step = (f: (h: tf.Tensor4D) => tf.Tensor4D) => {
    const next = tf.tidy(() => f(h))
    h.dispose()
    h = next
  }
  step((h) => maxPool(unit("Conv2d_4a_3x3", unit("Conv2d_3b_1x1", maxPool(h)))))
  for (const name of ["Mixed_5b", "Mixed_5c", "Mixed_5d"]) step((h) => a(name, h))
  step((h) =>
    cat([
      unit("Mixed_6a.branch3x3", h),
      unit("Mixed_6a.branch3x3dbl_3", unit("Mixed_6a.branch3x3dbl_2", unit("Mixed_6a.branch3x3dbl_1", h))),
      maxPool(h)
    ])
  )
  step((h) => c("Mixed_6b", h))
  step((h) => c("Mixed_6c", h))
  const [n, side] = h.shape
  // mixed_6/conv is Mixed_6d's 1×1 branch, computed again here (a 1×1 conv) to keep it apart from the block.
  const spatial = tf.tidy(() => tf.reshape(tf.slice(unit("Mixed_6d.branch1x1", h), [0, 0, 0, 0], [n, side, side, spatialChannels]), [n, -1]) as tf.Tensor2D)
  step((h) => c("Mixed_6d", h))
  step((h) => c("Mixed_6e", h))
  step((h) =>
    cat([
      unit("Mixed_7a.branch3x3_2", unit("Mixed_7a.branch3x3_1", h)),
      unit("Mixed_7a.branch7x7x3_4", unit("Mixed_7a.branch7x7x3_3", unit("Mixed_7a.branch7x7x3_2", unit("Mixed_7a.branch7x7x3_1", h)))),
      maxPool(h)
    ])
  )
  step((h) => e("Mixed_7b", h, averagePool))
  step((h) => e("Mixed_7c", h, maxPoolSame))
  const pool = tf.mean(h, [1, 2]) as tf.Tensor2D
  h.dispose()
  return { pool, spatial, logits: tf.matMul(pool, net.fc, false, true) }
}

/**
 * ADM's preprocessing of images in [-1, 1] (8-bit pixels p mapped to
 * p / 127.5 − 1 by the data package): back to p, TF's legacy bilinear resize
 * to `inputSize`, then (p − 128) / 128.
 */
export const preprocess = (config: Config, images: tf.Tensor4D): tf.Tensor4D => {
  const pixels = tf.mul(tf.add(images, 1), 127.5) as tf.Tensor4D
  const resized = images.shape[1] === config.inputSize && images.shape[2] === config.inputSize
    ? pixels
    : tf.image.resizeBilinear(pixels, [config.inputSize, config.inputSize], false, false)
  return tf.div(tf.sub(resized, 128), 128)
}

export const describe = (config: Config): string =>
  config.divisor === 1 ? "FID Inception-V3" : `FID Inception-V3 at 1/${config.divisor} width`

/**
 * The weights of a pytorch-fid state_dict (BatchNorm counters dropped),
 * checked key by key against the config; mismatches name the key and both shapes.
 */
export const fromStateDict = Effect.fn("Inception.fromStateDict")(function*<T extends StateDict.Shaped>(config: Config, tensors: ReadonlyMap<string, T>) {
  const weights = new Map([...tensors].filter(([k]) => !isBookkeeping(k)))
  yield* StateDict.checkShapes(describe(config), referenceShapes(config), weights)
  return weights
})
