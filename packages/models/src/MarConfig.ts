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
