/**
 * The shape of a MAR (Li et al., "Autoregressive Image Generation without
 * Vector Quantization"), as the reference constructor's arguments
 * (MAR(img_size, vae_stride, patch_size, encoder_embed_dim, encoder_depth, …,
 * diffloss_d, diffloss_w, num_sampling_steps, diffusion_batch_mul)), in
 * latent terms: `inputSize` is img_size / vae_stride and `inChannels` the
 * VAE's embed_dim, so a config says what latents it takes as DiT's does.
 *
 * The named sizes are the reference's (mar_base/large/huge with the DiffLoss
 * head of its released checkpoints), TinyFusion's TinyMAR-D16, and this
 * project's Fashion-MNIST minis.
 */
import { Effect, Schema } from "effect"
import { InvalidConfig } from "./Config.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Probability = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1))

export const MarConfig = Schema.Struct({
  /** Latent side (img_size / vae_stride: 16 for 256×256 images through the KL-16 VAE). */
  inputSize: PositiveInt,
  patchSize: PositiveInt,
  /** The VAE's embed_dim (vae_embed_dim). */
  inChannels: PositiveInt,
  encoderEmbedDim: PositiveInt,
  /** Encoder blocks; may be 0 in a pruned model that kept only decoder blocks. */
  encoderDepth: Count,
  encoderNumHeads: PositiveInt,
  decoderEmbedDim: PositiveInt,
  decoderDepth: Count,
  decoderNumHeads: PositiveInt,
  mlpRatio: Schema.Finite.check(Schema.isGreaterThan(0)),
  numClasses: PositiveInt,
  /** Class embedding replaced by fake_latent in training (label_drop_prob). */
  labelDropProb: Probability,
  /** Lower end of the masking ratio's truncated normal (mask_ratio_min). */
  maskRatioMin: Probability,
  attnDropout: Probability,
  projDropout: Probability,
  /** Positions in front of the tokens that hold the class embedding (buffer_size). */
  bufferSize: PositiveInt,
  /** DiffLoss MLP: residual blocks (diffloss_d) and width (diffloss_w). */
  difflossDepth: PositiveInt,
  difflossWidth: PositiveInt,
  /** The head's sampling respacing (num_sampling_steps, e.g. "100"). */
  numSamplingSteps: Schema.String,
  /** Each token's target is repeated this many times in the loss (diffusion_batch_mul). */
  diffusionBatchMul: PositiveInt
}).check(Schema.makeFilter((c) => {
  const issues: Array<string> = []
  if (c.inputSize % c.patchSize !== 0) issues.push(`inputSize ${c.inputSize} is not a multiple of patchSize ${c.patchSize}`)
  if (c.encoderEmbedDim % c.encoderNumHeads !== 0) {
    issues.push(`encoderEmbedDim ${c.encoderEmbedDim} is not divisible by encoderNumHeads ${c.encoderNumHeads}`)
  }
  if (c.decoderEmbedDim % c.decoderNumHeads !== 0) {
    issues.push(`decoderEmbedDim ${c.decoderEmbedDim} is not divisible by decoderNumHeads ${c.decoderNumHeads}`)
  }
  if (c.encoderDepth + c.decoderDepth === 0) issues.push("a MAR needs at least one block")
  return issues
}))
export type MarConfig = typeof MarConfig.Type

/** The reference's ImageNet 256 setting: KL-16 latents 16×16×16, tokens of one latent pixel, buffer 64. */
const mar = (width: number, depth: number, heads: number, difflossDepth: number, difflossWidth: number): MarConfig => ({
  inputSize: 16,
  patchSize: 1,
  inChannels: 16,
  encoderEmbedDim: width,
  encoderDepth: depth,
  encoderNumHeads: heads,
  decoderEmbedDim: width,
  decoderDepth: depth,
  decoderNumHeads: heads,
  mlpRatio: 4,
  numClasses: 1000,
  labelDropProb: 0.1,
  maskRatioMin: 0.7,
  attnDropout: 0.1,
  projDropout: 0.1,
  bufferSize: 64,
  difflossDepth,
  difflossWidth,
  numSamplingSteps: "100",
  diffusionBatchMul: 4
})

/** A MAR on the 8×8×4 Fashion-MNIST latents: 2×2 patches, buffer 4, 10 classes, a 3×128 head, no dropout. */
const fashionMnist = (width: number, depth: number, heads: number): MarConfig => ({
  ...mar(width, depth, heads, 3, 128),
  inputSize: 8,
  patchSize: 2,
  inChannels: 4,
  numClasses: 10,
  attnDropout: 0,
  projDropout: 0,
  bufferSize: 4
})

/**
 * The released MAR-B/L/H (README: DiffLoss 6×1024, 8×1280, 12×1536), TinyMAR-D16
 * (MAR-L with 8 + 8 of its 32 blocks: 1:2 keeps one of each encoder pair and
 * one of each decoder pair), and the minis on the 8×8×4 Fashion-MNIST latents:
 * 2×2 patches give 16 tokens of 16 features (MAR's token width), a buffer of 4
 * (the reference's quarter of the sequence), width 128 with heads of 32, a
 * 3×128 DiffLoss head over 100 steps. `mini` is the MAR-L of the reproduction
 * (16 + 16 blocks), `mini-base` its MAR-B (12 + 12 blocks, width 96 = 128 ×
 * 768/1024, the reference's ratio). The minis train without dropout: they
 * see their data for a few epochs, not MAR's 400.
 */
export const presets = {
  "MAR-B": mar(768, 12, 12, 6, 1024),
  "MAR-L": mar(1024, 16, 16, 8, 1280),
  "MAR-H": mar(1280, 20, 16, 12, 1536),
  "TinyMAR-D16": mar(1024, 8, 16, 8, 1280),
  mini: fashionMnist(128, 16, 4),
  "mini-base": fashionMnist(96, 12, 3)
} as const satisfies Record<string, MarConfig>

export type PresetName = keyof typeof presets
export const presetNames = Object.keys(presets) as ReadonlyArray<PresetName>

const decodeConfig = Schema.decodeUnknownEffect(MarConfig)

/** Validates an unknown value (flags, a manifest, checkpoint metadata) as a MAR config. */
export const decode = Effect.fn("MarConfig.decode")(function*(input: unknown) {
  return yield* decodeConfig(input).pipe(Effect.mapError((e) => new InvalidConfig({ reason: e.message })))
})

/** A preset with some fields replaced, validated. */
export const make = (name: PresetName, overrides: Partial<MarConfig> = {}) => decode({ ...presets[name], ...overrides })

export const gridSize = (c: MarConfig): number => c.inputSize / c.patchSize
/** seq_len: tokens of one image. */
export const tokens = (c: MarConfig): number => gridSize(c) ** 2
/** token_embed_dim = vae_embed_dim · patch_size². */
export const tokenDim = (c: MarConfig): number => c.inChannels * c.patchSize ** 2
/** Blocks in forward order: the encoder's, then the decoder's (the paper's "32 = 16 + 16"). */
export const depth = (c: MarConfig): number => c.encoderDepth + c.decoderDepth
/** int(dim · mlp_ratio), as timm's Mlp truncates. */
export const mlpHidden = (dim: number, c: MarConfig): number => Math.trunc(dim * c.mlpRatio)
/** The label meaning "no class": the fake_latent (dropped in training, the unconditional half under guidance). */
export const nullClass = (c: MarConfig): number => c.numClasses

/** "MAR(encoder 16×1024, decoder 16×1024, …)" for messages. */
export const describe = (c: MarConfig): string =>
  `MAR(encoder ${c.encoderDepth}×${c.encoderEmbedDim}, decoder ${c.decoderDepth}×${c.decoderEmbedDim}, ` +
  `patch ${c.patchSize}, ${c.inputSize}×${c.inputSize}×${c.inChannels}, ${c.numClasses} classes, ` +
  `DiffLoss ${c.difflossDepth}×${c.difflossWidth})`

/** Heads of the reference's models (mar_base, mar_large, mar_huge) by their width: what no shape tells. */
export const knownHeads: ReadonlyMap<number, number> = new Map([[768, 12], [1024, 16], [1280, 16]])

/** The reference's model names (main_mar.py's --model) and their heads. */
const referenceHeads: Readonly<Record<string, number>> = { mar_base: 12, mar_large: 16, mar_huge: 16 }

export interface InferOptions {
  /** Attention heads of both halves; required when neither the checkpoint's args nor the width name a known model. */
  readonly heads?: number | undefined
  /** Patch size (how the tokens split into latent pixels); default the args' patch_size, else 1. */
  readonly patch?: number | undefined
  /** main_mar.py's arguments as its training checkpoint stores them (`args`): what the shapes cannot tell. */
  readonly args?: Readonly<Record<string, string | number | boolean | null>> | undefined
}

export interface Inferred {
  readonly config: MarConfig
  /** What was neither read from a shape nor from the checkpoint's args, in words. */
  readonly assumed: ReadonlyArray<string>
}

/**
 * The config whose reference state_dict these shapes are: widths (fake_latent,
 * mask_token), depths (blocks present), tokens and buffer (the position
 * embeddings), token width (z_proj), MLP ratio, classes (class_emb), the
 * DiffLoss head's depth and width. How the tokens split into latent side,
 * patch and channels, and the training-only fields (label drop, masking,
 * dropout, sampling steps, batch multiplier), come from the training
 * checkpoint's args when it has them, otherwise the reference's defaults
 * (patch 1, as every released model) and the released models' settings,
 * each said in `assumed`. Heads: `heads`, the args' model name, or the
 * width's known model.
 */
export const infer = Effect.fn("MarConfig.infer")(function*(
  shapes: ReadonlyMap<string, ReadonlyArray<number>>,
  options: InferOptions = {}
) {
  const fail = (reason: string) => new InvalidConfig({ reason })
  const shape = (key: string, rank: number) => {
    const s = shapes.get(key)
    if (s === undefined) return Effect.fail(fail(`no ${key}: not a MAR state_dict (its keys start ${[...shapes.keys()].slice(0, 3).join(", ")})`))
    if (s.length !== rank) return Effect.fail(fail(`${key} is [${s.join(", ")}], a MAR's has rank ${rank}`))
    return Effect.succeed(s)
  }
  const count = (prefix: string) => {
    let n = 0
    while (shapes.has(`${prefix}.${n}.attn.qkv.weight`) || shapes.has(`${prefix}.${n}.in_ln.weight`)) n++
    return n
  }
  const encoderEmbedDim = (yield* shape("fake_latent", 2))[1]!
  const decoderEmbedDim = (yield* shape("mask_token", 3))[2]!
  const positions = (yield* shape("encoder_pos_embed_learned", 3))[1]!
  const seq = (yield* shape("diffusion_pos_embed_learned", 3))[1]!
  const tokenDim = (yield* shape("z_proj.weight", 2))[1]!
  const numClasses = (yield* shape("class_emb.weight", 2))[0]!
  const difflossWidth = (yield* shape("diffloss.net.input_proj.weight", 2))[0]!
  const encoderDepth = count("encoder_blocks")
  const decoderDepth = count("decoder_blocks")
  const [hidden, dim] = encoderDepth > 0 ? yield* shape("encoder_blocks.0.mlp.fc1.weight", 2) : yield* shape("decoder_blocks.0.mlp.fc1.weight", 2)
  const args = options.args ?? {}
  const assumed: Array<string> = []
  const number = (name: string, fallback: number, why: string): number => {
    const v = args[name]
    if (typeof v === "number") return v
    assumed.push(`${name} ${fallback} (${why})`)
    return fallback
  }
  const patchSize = options.patch ?? number("patch_size", 1, "the reference's default, every released model's")
  const inChannels = tokenDim / patchSize ** 2
  const side = Math.round(Math.sqrt(seq)) * patchSize
  if ((side / patchSize) ** 2 !== seq) return yield* fail(`diffusion_pos_embed_learned has ${seq} tokens, not a square grid`)
  if (!Number.isInteger(inChannels)) return yield* fail(`z_proj takes ${tokenDim} features, not channels × patch ${patchSize}²`)
  if (typeof args["img_size"] === "number" && typeof args["vae_stride"] === "number" && args["img_size"] / args["vae_stride"] !== side) {
    return yield* fail(`args img_size ${args["img_size"]} / vae_stride ${args["vae_stride"]} is not the ${side} latent side of ${seq} tokens of patch ${patchSize}`)
  }
  const named = typeof args["model"] === "string" ? referenceHeads[args["model"]] : undefined
  const heads = options.heads ?? named ?? knownHeads.get(encoderDepth > 0 ? encoderEmbedDim : decoderEmbedDim)
  if (heads === undefined) {
    return yield* fail(
      `width ${encoderEmbedDim} names no known MAR (${[...knownHeads].map(([w, h]) => `${w}: ${h} heads`).join(", ")}); give --heads`
    )
  }
  if (options.heads === undefined && named === undefined) assumed.push(`${heads} heads, as the reference's model of width ${encoderEmbedDim}`)
  const released = presets["MAR-L"]
  const sampling = args["num_sampling_steps"]
  if (typeof sampling !== "string") assumed.push(`num_sampling_steps "${released.numSamplingSteps}" (the reference's)`)
  return {
    config: yield* decode({
      inputSize: side,
      patchSize,
      inChannels,
      encoderEmbedDim,
      encoderDepth,
      encoderNumHeads: heads,
      decoderEmbedDim,
      decoderDepth,
      decoderNumHeads: heads,
      mlpRatio: hidden! / dim!,
      numClasses,
      labelDropProb: number("label_drop_prob", released.labelDropProb, "the reference's"),
      maskRatioMin: number("mask_ratio_min", released.maskRatioMin, "the reference's"),
      attnDropout: number("attn_dropout", released.attnDropout, "the reference's"),
      projDropout: number("proj_dropout", released.projDropout, "the reference's"),
      bufferSize: positions - seq,
      difflossDepth: count("diffloss.net.res_blocks"),
      difflossWidth,
      numSamplingSteps: typeof sampling === "string" ? sampling : released.numSamplingSteps,
      diffusionBatchMul: number("diffusion_batch_mul", released.diffusionBatchMul, "the README's training runs")
    }),
    assumed
  } satisfies Inferred
})
