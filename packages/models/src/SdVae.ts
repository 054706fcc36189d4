/**
 * Stable Diffusion's VAE (kl-f8, AutoencoderKL) as a pure function of a
 * parameter tree whose dotted keys are diffusers' state_dict keys (what DiT
 * and SiT load with AutoencoderKL.from_pretrained("stabilityai/sd-vae-ft-ema")).
 * Images NHWC in [-1, 1]; weights in PyTorch layouts.
 *
 *   encoder: conv_in → per level [resnets × L, downsample (pad 0,1,0,1; conv 3×3 stride 2) but the last]
 *            → mid [resnet, attention, resnet] → GroupNorm → SiLU → conv_out (2·latent) → quant_conv (1×1)
 *   decoder: post_quant_conv (1×1) → conv_in → mid → per level, deepest first [resnets × (L + 1),
 *            nearest ×2 + conv 3×3 but the last] → GroupNorm → SiLU → conv_out
 *   resnet:  x + conv2(SiLU(GN(conv1(SiLU(GN(x)))))), the skip through a 1×1 conv when widths differ
 *   attention: one head over the h·w positions, GroupNorm'd input, residual
 *
 * GroupNorm has 32 groups and eps 1e-6. Latents for a DiT are posterior
 * samples × 0.18215; decoding divides by it. The published weights come in
 * three key layouts, all read by `fromLayout`: diffusers' (to_q/to_k/to_v/
 * to_out.0), diffusers' older files (query/key/value/proj_attn, as
 * sd-vae-ft-ema's diffusion_pytorch_model.safetensors), and latent-diffusion's
 * original (encoder.down.0.block.0…, mid.attn_1.q…, 1×1 conv attention weights).
 */
import { Schema } from "effect"
import { HostTensor, type ParamTree, tf } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"

export const Config = Schema.Struct({
  imageChannels: Schema.Int,
  /** Channels per level (kl-f8: 128, 256, 512, 512); each level after the first halves the side. */
  channels: Schema.Array(Schema.Int),
  /** Resnets per encoder level (the decoder has one more). */
  layersPerBlock: Schema.Int,
  latentChannels: Schema.Int,
  groups: Schema.Int,
  /** Latents = posterior × scale (SD: 0.18215). */
  scale: Schema.Number
})
export type Config = typeof Config.Type

/** Stable Diffusion's kl-f8, as sd-vae-ft-ema and sd-vae-ft-mse publish it. */
export const klF8: Config = { imageChannels: 3, channels: [128, 256, 512, 512], layersPerBlock: 2, latentChannels: 4, groups: 32, scale: 0.18215 }

export const factor = (config: Config): number => 2 ** (config.channels.length - 1)

/** [h, w, latentChannels] of an image side. */
export const latentShape = (config: Config, imageSize: number): readonly [number, number, number] =>
  [imageSize / factor(config), imageSize / factor(config), config.latentChannels]

/** Every diffusers key with its shape, in the order diffusers' state_dict lists them. */
export function referenceShapes(config: Config): Array<readonly [string, ReadonlyArray<number>]> {
  const out: Array<readonly [string, ReadonlyArray<number>]> = []
  const conv = (key: string, o: number, i: number, k: number) => out.push([`${key}.weight`, [o, i, k, k]], [`${key}.bias`, [o]])
  const norm = (key: string, c: number) => out.push([`${key}.weight`, [c]], [`${key}.bias`, [c]])
  const linear = (key: string, c: number) => out.push([`${key}.weight`, [c, c]], [`${key}.bias`, [c]])
  const resnet = (key: string, i: number, o: number) => {
    norm(`${key}.norm1`, i)
    conv(`${key}.conv1`, o, i, 3)
    norm(`${key}.norm2`, o)
    conv(`${key}.conv2`, o, o, 3)
    if (i !== o) conv(`${key}.conv_shortcut`, o, i, 1)
  }
  const mid = (key: string, c: number) => {
    resnet(`${key}.resnets.0`, c, c)
    norm(`${key}.attentions.0.group_norm`, c)
    for (const p of ["to_q", "to_k", "to_v", "to_out.0"]) linear(`${key}.attentions.0.${p}`, c)
    resnet(`${key}.resnets.1`, c, c)
  }
  const ch = config.channels
  const levels = ch.length
  const deepest = ch[levels - 1]!
  conv("encoder.conv_in", ch[0]!, config.imageChannels, 3)
  ch.forEach((o, l) => {
    for (let j = 0; j < config.layersPerBlock; j++) resnet(`encoder.down_blocks.${l}.resnets.${j}`, j === 0 ? ch[Math.max(0, l - 1)]! : o, o)
    if (l < levels - 1) conv(`encoder.down_blocks.${l}.downsamplers.0.conv`, o, o, 3)
  })
  mid("encoder.mid_block", deepest)
  norm("encoder.conv_norm_out", deepest)
  conv("encoder.conv_out", 2 * config.latentChannels, deepest, 3)
  conv("decoder.conv_in", deepest, config.latentChannels, 3)
  mid("decoder.mid_block", deepest)
  const reversed = [...ch].reverse()
  reversed.forEach((o, i) => {
    for (let j = 0; j <= config.layersPerBlock; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? reversed[Math.max(0, i - 1)]! : o, o)
    if (i < levels - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, o, o, 3)
  })
  norm("decoder.conv_norm_out", ch[0]!)
  conv("decoder.conv_out", config.imageChannels, ch[0]!, 3)
  conv("quant_conv", 2 * config.latentChannels, 2 * config.latentChannels, 1)
  conv("post_quant_conv", config.latentChannels, config.latentChannels, 1)
  return out
}

// ---------------------------------------------------------------- layouts

export const Layout = Schema.Literals(["diffusers", "diffusers-legacy-attention", "original"])
export type Layout = typeof Layout.Type

/** Which published layout a set of keys is in (undefined: none of them). */
export function detectLayout(keys: Iterable<string>): Layout | undefined {
  const all = [...keys]
  if (all.some((k) => /(^|\.)encoder\.down\.\d+\.block\./.test(k))) return "original"
  if (all.some((k) => k.includes("encoder.down_blocks."))) {
    return all.some((k) => /attentions\.0\.(query|key|value|proj_attn)\./.test(k)) ? "diffusers-legacy-attention" : "diffusers"
  }
  return undefined
}

const renames: Record<Layout, ReadonlyArray<readonly [RegExp, string]>> = {
  diffusers: [],
  "diffusers-legacy-attention": [
    [/attentions\.0\.query\./, "attentions.0.to_q."],
    [/attentions\.0\.key\./, "attentions.0.to_k."],
    [/attentions\.0\.value\./, "attentions.0.to_v."],
    [/attentions\.0\.proj_attn\./, "attentions.0.to_out.0."]
  ],
  original: [
    [/^first_stage_model\./, ""],
    [/^encoder\.down\.(\d+)\.block\.(\d+)\./, "encoder.down_blocks.$1.resnets.$2."],
    [/^encoder\.down\.(\d+)\.downsample\.conv\./, "encoder.down_blocks.$1.downsamplers.0.conv."],
    [/\.nin_shortcut\./, ".conv_shortcut."],
    [/\.mid\.block_1\./, ".mid_block.resnets.0."],
    [/\.mid\.block_2\./, ".mid_block.resnets.1."],
    [/\.mid\.attn_1\.norm\./, ".mid_block.attentions.0.group_norm."],
    [/\.mid\.attn_1\.q\./, ".mid_block.attentions.0.to_q."],
    [/\.mid\.attn_1\.k\./, ".mid_block.attentions.0.to_k."],
    [/\.mid\.attn_1\.v\./, ".mid_block.attentions.0.to_v."],
    [/\.mid\.attn_1\.proj_out\./, ".mid_block.attentions.0.to_out.0."],
    [/^(encoder|decoder)\.norm_out\./, "$1.conv_norm_out."]
  ]
}

/** latent-diffusion numbers decoder levels from the top (up.0 is full size); diffusers from the deepest. */
const upBlocks = (key: string, levels: number): string =>
  key
    .replace(/^decoder\.up\.(\d+)\.block\.(\d+)\./, (_, b: string, j: string) => `decoder.up_blocks.${levels - 1 - Number(b)}.resnets.${j}.`)
    .replace(/^decoder\.up\.(\d+)\.upsample\.conv\./, (_, b: string) => `decoder.up_blocks.${levels - 1 - Number(b)}.upsamplers.0.conv.`)

/** What a checkpoint holds besides the VAE (an LDM checkpoint's loss and discriminator, a full SD model). */
const isVaeKey = (key: string) => /^(encoder|decoder|quant_conv|post_quant_conv)\./.test(key)

/**
 * Tensors of any layout renamed to diffusers' keys, attention weights as
 * [C, C] (latent-diffusion's 1×1 convs squeezed). Keys outside the VAE are
 * returned in `ignored`, so a caller can say what it left out.
 */
export function fromLayout<T extends StateDict.Shaped>(
  layout: Layout,
  tensors: ReadonlyMap<string, T>,
  squeeze: (t: T) => T
): { readonly tensors: Map<string, T>; readonly ignored: ReadonlyArray<string> } {
  const levels = new Set([...tensors.keys()].flatMap((k) => /encoder\.down(?:_blocks)?\.(\d+)\./.exec(k)?.[1] ?? [])).size
  const out = new Map<string, T>()
  const ignored: Array<string> = []
  for (const [key, t] of tensors) {
    let k = key
    for (const [from, to] of renames[layout]) k = k.replace(from, to)
    if (layout === "original") k = upBlocks(k, levels)
    if (!isVaeKey(k)) {
      ignored.push(key)
      continue
    }
    const conv1x1 = /attentions\.0\.to_(q|k|v|out\.0)\.weight$/.test(k) && t.shape.length === 4 && t.shape[2] === 1 && t.shape[3] === 1
    out.set(k, conv1x1 ? squeeze(t) : t)
  }
  return { tensors: out, ignored }
}

/** `fromLayout`'s squeeze of host tensors: [C, C, 1, 1] → [C, C]. */
export const squeezeHost = (t: HostTensor.HostTensor): HostTensor.HostTensor => HostTensor.float32(t.shape.slice(0, 2), t.data as Float32Array)

/** The config the tensors' shapes name (the latent scale and GroupNorm groups are not in the weights: kl-f8's). */
export function inferConfig(tensors: ReadonlyMap<string, StateDict.Shaped>): Config | undefined {
  const convIn = tensors.get("encoder.conv_in.weight")
  const quant = tensors.get("quant_conv.weight")
  if (convIn === undefined || quant === undefined) return undefined
  const channels: Array<number> = []
  for (let l = 0; tensors.has(`encoder.down_blocks.${l}.resnets.0.conv1.weight`); l++) {
    channels.push(tensors.get(`encoder.down_blocks.${l}.resnets.0.conv1.weight`)!.shape[0]!)
  }
  let layers = 0
  while (tensors.has(`encoder.down_blocks.0.resnets.${layers}.conv1.weight`)) layers++
  return { ...klF8, imageChannels: convIn.shape[1]!, channels, layersPerBlock: layers, latentChannels: quant.shape[0]! / 2 }
}

export const describe = (config: Config): string =>
  `SD-VAE (channels ${config.channels.join("/")}, ${config.layersPerBlock} resnets per level, ${config.latentChannels} latent channels)`

/** Fails unless the (diffusers-keyed) tensors are exactly the config's, in float32; mismatches name the key and both shapes. */
export const check = (config: Config, tensors: ReadonlyMap<string, StateDict.Shaped>) =>
  StateDict.checkShapes(describe(config), referenceShapes(config), tensors)

// ---------------------------------------------------------------- forward

type Layer = { readonly weight: tf.Tensor; readonly bias: tf.Tensor }
type Tree = { readonly [key: string]: Tree } & Layer

const at = (tree: ParamTree.ParamTree, path: string): Tree =>
  path.split(".").reduce((node: any, part) => {
    const next = node?.[part]
    if (next === undefined) throw new Error(`no parameter ${path}`)
    return next
  }, tree) as Tree

const conv = (x: tf.Tensor4D, p: Layer, stride = 1, pad: "same" | "valid" = "same"): tf.Tensor4D =>
  tf.add(tf.conv2d(x, tf.transpose(p.weight, [2, 3, 1, 0]) as tf.Tensor4D, stride, pad), p.bias)

const silu = (x: tf.Tensor4D): tf.Tensor4D => tf.mul(x, tf.sigmoid(x))

/** torch.nn.GroupNorm on NHWC: statistics over (h, w, channels of the group), biased variance. */
const groupNorm = (x: tf.Tensor4D, p: Layer, groups: number, eps = 1e-6): tf.Tensor4D => {
  const [n, h, w, c] = x.shape
  const grouped = tf.reshape(x, [n, h, w, groups, c / groups])
  const { mean, variance } = tf.moments(grouped, [1, 2, 4], true)
  const normed = tf.reshape(tf.div(tf.sub(grouped, mean), tf.sqrt(tf.add(variance, eps))), [n, h, w, c])
  return tf.add(tf.mul(normed, p.weight), p.bias)
}

const resnet = (x: tf.Tensor4D, p: Tree, groups: number): tf.Tensor4D => {
  let h = conv(silu(groupNorm(x, p["norm1"]!, groups)), p["conv1"]!)
  h = conv(silu(groupNorm(h, p["norm2"]!, groups)), p["conv2"]!)
  return tf.add(p["conv_shortcut"] === undefined ? x : conv(x, p["conv_shortcut"]), h)
}

const attention = (x: tf.Tensor4D, p: Tree, groups: number): tf.Tensor4D => {
  const [n, h, w, c] = x.shape
  const tokens = tf.reshape(groupNorm(x, p["group_norm"]!, groups), [n, h * w, c])
  const linear = (q: Layer) => tf.add(tf.matMul(tokens, q.weight, false, true), q.bias) as tf.Tensor3D
  const q = linear(p["to_q"]!)
  const k = linear(p["to_k"]!)
  const v = linear(p["to_v"]!)
  const weights = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(c)))
  const out = p["to_out"]!["0"]!
  const attended = tf.add(tf.matMul(tf.matMul(weights, v), out.weight, false, true), out.bias)
  return tf.add(x, tf.reshape(attended, [n, h, w, c]))
}

const mid = (x: tf.Tensor4D, p: Tree, groups: number): tf.Tensor4D =>
  resnet(attention(resnet(x, p["resnets"]!["0"]!, groups), p["attentions"]!["0"]!, groups), p["resnets"]!["1"]!, groups)

const upsample = (x: tf.Tensor4D): tf.Tensor4D => {
  const [n, h, w, c] = x.shape
  return tf.reshape(tf.tile(tf.reshape(x, [n, h, 1, w, 1, c]), [1, 1, 2, 1, 2, 1]), [n, 2 * h, 2 * w, c])
}

export interface Posterior {
  readonly mean: tf.Tensor4D
  readonly logvar: tf.Tensor4D
}

/** Images [N, H, W, C] in [-1, 1] → the posterior's mean and log-variance [N, H/8, W/8, latent]. */
export function encode(config: Config, tree: ParamTree.ParamTree, x: tf.Tensor4D): Posterior {
  const e = at(tree, "encoder")
  // Each block in its own tidy: at 256 × 256 the intermediates of the whole pass would not fit a wasm heap.
  let h = tf.tidy(() => conv(x, e["conv_in"]!))
  const step = (f: (h: tf.Tensor4D) => tf.Tensor4D) => {
    const next = tf.tidy(() => f(h))
    h.dispose()
    h = next
  }
  config.channels.forEach((_, l) => {
    const block = e["down_blocks"]![String(l)]!
    for (let j = 0; j < config.layersPerBlock; j++) step((h) => resnet(h, block["resnets"]![String(j)]!, config.groups))
    if (l < config.channels.length - 1) step((h) => conv(tf.pad(h, [[0, 0], [0, 1], [0, 1], [0, 0]]), block["downsamplers"]!["0"]!["conv"]!, 2, "valid"))
  })
  step((h) => mid(h, e["mid_block"]!, config.groups))
  step((h) => conv(conv(silu(groupNorm(h, e["conv_norm_out"]!, config.groups)), e["conv_out"]!), at(tree, "quant_conv")))
  const [mean, logvar] = tf.split(h, 2, 3) as [tf.Tensor4D, tf.Tensor4D]
  h.dispose()
  // As DiagonalGaussianDistribution.
  return { mean, logvar: tf.tidy(() => tf.clipByValue(logvar, -30, 20)) }
}

/** Unscaled latents [N, h, w, latent] → images [N, 8h, 8w, C] (unclamped). */
export function decode(config: Config, tree: ParamTree.ParamTree, z: tf.Tensor4D): tf.Tensor4D {
  const d = at(tree, "decoder")
  let h = tf.tidy(() => conv(conv(z, at(tree, "post_quant_conv")), d["conv_in"]!))
  const step = (f: (h: tf.Tensor4D) => tf.Tensor4D) => {
    const next = tf.tidy(() => f(h))
    h.dispose()
    h = next
  }
  step((h) => mid(h, d["mid_block"]!, config.groups))
  config.channels.forEach((_, i) => {
    const block = d["up_blocks"]![String(i)]!
    for (let j = 0; j <= config.layersPerBlock; j++) step((h) => resnet(h, block["resnets"]![String(j)]!, config.groups))
    if (i < config.channels.length - 1) step((h) => conv(upsample(h), block["upsamplers"]!["0"]!["conv"]!))
  })
  step((h) => conv(silu(groupNorm(h, d["conv_norm_out"]!, config.groups)), d["conv_out"]!))
  return h
}
