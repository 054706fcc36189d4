/**
 * The shape of a DiT, as the reference constructor's arguments
 * (DiT(input_size, patch_size, in_channels, hidden_size, depth, num_heads,
 * mlp_ratio, class_dropout_prob, num_classes, learn_sigma)). The named
 * sizes are DiT's and TinyFusion's; `mini` is the shape of this project's
 * Fashion-MNIST teacher, and every field can be overridden.
 *
 * A width-pruned DiT (Diff-Pruning) keeps whole heads and some MLP channels,
 * so its head width and MLP width no longer follow from hidden_size: it
 * records them in `headDim` and `mlpHidden` (the reference's Attention and
 * Mlp modules take them as their inner widths). Absent, they are the
 * reference's hidden_size / num_heads and int(hidden_size · mlp_ratio).
 */
import { Effect, Schema } from "effect"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

export const Config = Schema.Struct({
  /** Latent side (32 for 256×256 images through the f=8 VAE). */
  inputSize: PositiveInt,
  patchSize: PositiveInt,
  inChannels: PositiveInt,
  hiddenSize: PositiveInt,
  depth: PositiveInt,
  numHeads: PositiveInt,
  mlpRatio: Schema.Finite.check(Schema.isGreaterThan(0)),
  numClasses: PositiveInt,
  /** Label dropout in training; > 0 also adds the null-class row used by guidance. */
  classDropoutProb: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThanOrEqualTo(1)),
  /** Output 2·C channels: ε and the variance interpolation v. */
  learnSigma: Schema.Boolean,
  /** Width of one attention head (q, k and v each); absent: hiddenSize / numHeads. */
  headDim: Schema.optional(PositiveInt),
  /** Hidden width of every MLP; absent: int(hiddenSize · mlpRatio). */
  mlpHidden: Schema.optional(PositiveInt)
}).check(Schema.makeFilter((c) => {
  const issues: Array<string> = []
  if (c.inputSize % c.patchSize !== 0) issues.push(`inputSize ${c.inputSize} is not a multiple of patchSize ${c.patchSize}`)
  if (c.headDim === undefined && c.hiddenSize % c.numHeads !== 0) {
    issues.push(`hiddenSize ${c.hiddenSize} is not divisible by numHeads ${c.numHeads} (give headDim for other head widths)`)
  }
  // The 2-D sin-cos position embedding splits the width in four (two axes × sin/cos).
  if (c.hiddenSize % 4 !== 0) issues.push(`hiddenSize ${c.hiddenSize} is not a multiple of 4 (2-D sin-cos position embedding)`)
  return issues
}))
export type Config = typeof Config.Type

export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid model config: ${this.reason}`
  }
}

const dit = (depth: number, hiddenSize: number, numHeads: number, patchSize: number): Config => ({
  inputSize: 32,
  patchSize,
  inChannels: 4,
  hiddenSize,
  depth,
  numHeads,
  mlpRatio: 4,
  numClasses: 1000,
  classDropoutProb: 0.1,
  learnSigma: true
})

/** DiT's twelve sizes, TinyFusion's pruned XL/2 depths, and this project's mini teacher. */
export const presets = {
  "DiT-XL/2": dit(28, 1152, 16, 2),
  "DiT-XL/4": dit(28, 1152, 16, 4),
  "DiT-XL/8": dit(28, 1152, 16, 8),
  "DiT-L/2": dit(24, 1024, 16, 2),
  "DiT-L/4": dit(24, 1024, 16, 4),
  "DiT-L/8": dit(24, 1024, 16, 8),
  "DiT-B/2": dit(12, 768, 12, 2),
  "DiT-B/4": dit(12, 768, 12, 4),
  "DiT-B/8": dit(12, 768, 12, 8),
  "DiT-S/2": dit(12, 384, 6, 2),
  "DiT-S/4": dit(12, 384, 6, 4),
  "DiT-S/8": dit(12, 384, 6, 8),
  "TinyDiT-D19": dit(19, 1152, 16, 2),
  "TinyDiT-D14": dit(14, 1152, 16, 2),
  "TinyDiT-D7": dit(7, 1152, 16, 2),
  /** 8×8×4 latents of 32×32 Fashion-MNIST, 10 classes, 28 layers of width 128 → 16 tokens. */
  mini: { ...dit(28, 128, 4, 2), inputSize: 8, numClasses: 10 }
} as const satisfies Record<string, Config>

export type PresetName = keyof typeof presets
export const presetNames = Object.keys(presets) as ReadonlyArray<PresetName>

const decodeConfig = Schema.decodeUnknownEffect(Config)

/** Validates an unknown value (a flag set, a manifest, checkpoint metadata) as a config. */
export const decode = Effect.fn("Config.decode")(function*(input: unknown) {
  return yield* decodeConfig(input).pipe(Effect.mapError((e) => new InvalidConfig({ reason: e.message })))
})

/** A preset with some fields replaced, validated. */
export const make = (name: PresetName, overrides: Partial<Config> = {}) => decode({ ...presets[name], ...overrides })

export const gridSize = (c: Config): number => c.inputSize / c.patchSize
export const tokens = (c: Config): number => gridSize(c) ** 2
export const outChannels = (c: Config): number => (c.learnSigma ? 2 * c.inChannels : c.inChannels)
export const headDim = (c: Config): number => c.headDim ?? c.hiddenSize / c.numHeads
/** Width of q, k and v each (and of proj's input): heads × head width. */
export const attentionWidth = (c: Config): number => c.numHeads * headDim(c)
/** The MLP's hidden width: as recorded, else int(hidden_size · mlp_ratio), as Python truncates. */
export const mlpHidden = (c: Config): number => c.mlpHidden ?? Math.trunc(c.hiddenSize * c.mlpRatio)
/** Rows of the label table: the classes and, when labels can be dropped, the null class. */
export const labelRows = (c: Config): number => c.numClasses + (c.classDropoutProb > 0 ? 1 : 0)
/** The label index that means "no class" (classifier-free guidance). */
export const nullClass = (c: Config): number => c.numClasses

/** "DiT(depth 28, hidden 1152, heads 16, patch 2, 32×32×4, 1000 classes)" for messages; recorded widths too ("heads 11 × 72, MLP 3264"). */
export const describe = (c: Config): string =>
  `DiT(depth ${c.depth}, hidden ${c.hiddenSize}, heads ${c.numHeads}${c.headDim === undefined ? "" : ` × ${c.headDim}`}, ` +
  `${c.mlpHidden === undefined ? "" : `MLP ${c.mlpHidden}, `}patch ${c.patchSize}, ` +
  `${c.inputSize}×${c.inputSize}×${c.inChannels}, ${c.numClasses} classes${c.learnSigma ? ", learn_sigma" : ""})`

/** Attention heads of the widths DiT (and this project's mini teacher) use: the one fact shapes cannot tell. */
export const knownHeads: ReadonlyMap<number, number> = new Map([[1152, 16], [1024, 16], [768, 12], [384, 6], [128, 4]])

export interface InferOptions {
  /** Required when the width names no known model. */
  readonly heads?: number
  /** Label dropout of training; > 0 means the label table has a null-class row (default 0.1, DiT's). */
  readonly classDropoutProb?: number
}

export interface Inferred {
  readonly config: Config
  /** What was not read from a shape, in words (for the import's report). */
  readonly assumed: ReadonlyArray<string>
}

/**
 * The config whose reference state_dict these shapes are: depth (blocks
 * present), width and patch and latent channels (x_embedder), input size
 * (pos_embed's tokens), learn_sigma (final layer's outputs), classes (the
 * label table, less the null-class row when label dropout is on). Heads are not in any shape: `heads`, or the width's known model. A
 * width-pruned model (Diff-Pruning's shape: whole heads and MLP channels
 * removed) records the widths its shapes give where they are not the
 * reference's defaults: `headDim` = qkv rows / 3 / heads, `mlpHidden` = fc1
 * rows (the MLP ratio is DiT's 4, which no shape can tell from a width).
 */
export const infer = Effect.fn("Config.infer")(function*(
  shapes: ReadonlyMap<string, ReadonlyArray<number>>,
  options: InferOptions = {}
) {
  const fail = (reason: string) => new InvalidConfig({ reason })
  const shape = (key: string, rank: number) => {
    const s = shapes.get(key)
    if (s === undefined) return Effect.fail(fail(`no ${key}: not a DiT/SiT state_dict (its keys start ${[...shapes.keys()].slice(0, 3).join(", ")})`))
    if (s.length !== rank) return Effect.fail(fail(`${key} is [${s.join(", ")}], a DiT's has rank ${rank}`))
    return Effect.succeed(s)
  }
  const [hidden, inChannels, patch] = yield* shape("x_embedder.proj.weight", 4)
  const tokens = (yield* shape("pos_embed", 3))[1]!
  const [outs] = yield* shape("final_layer.linear.weight", 2)
  const [rows] = yield* shape("y_embedder.embedding_table.weight", 2)
  const [mlp] = yield* shape("blocks.0.mlp.fc1.weight", 2)
  const [qkv] = yield* shape("blocks.0.attn.qkv.weight", 2)
  let depth = 0
  while (shapes.has(`blocks.${depth}.attn.qkv.weight`)) depth++
  const side = Math.round(Math.sqrt(tokens)) * patch!
  if ((side / patch!) ** 2 !== tokens) return yield* fail(`pos_embed has ${tokens} tokens, not a square grid`)
  const outChannels = outs! / (patch! * patch!)
  if (outChannels !== inChannels && outChannels !== 2 * inChannels!) {
    return yield* fail(`final_layer.linear.weight has ${outs} outputs: ${outChannels} channels per pixel, neither ${inChannels} nor ${2 * inChannels!} (learn_sigma)`)
  }
  const assumed: Array<string> = []
  const heads = options.heads ?? knownHeads.get(hidden!)
  if (heads === undefined) {
    return yield* fail(
      `hidden width ${hidden} names no known model (${[...knownHeads].map(([w, h]) => `${w}: ${h} heads`).join(", ")}); give --heads`
    )
  }
  if (options.heads === undefined) assumed.push(`${heads} heads, as every model of width ${hidden}`)
  if (qkv! % (3 * heads) !== 0) return yield* fail(`blocks.0.attn.qkv.weight has ${qkv} rows, not 3 × ${heads} heads × a head width`)
  const headDim = qkv! / 3 / heads
  // DiT's MLP ratio (every published DiT's); another fc1 width is recorded as it is.
  const widths = {
    mlpRatio: 4,
    ...(headDim * heads === hidden ? {} : { headDim }),
    ...(Math.trunc(hidden! * 4) === mlp ? {} : { mlpHidden: mlp })
  }
  const dropout = options.classDropoutProb ?? 0.1
  if (options.classDropoutProb === undefined) {
    assumed.push(`class dropout 0.1 (DiT's): the last of the ${rows} label rows is the null class; --class-dropout 0 reads ${rows} classes`)
  }
  return {
    config: yield* decode({
      inputSize: side,
      patchSize: patch,
      inChannels,
      hiddenSize: hidden,
      depth,
      numHeads: heads,
      ...widths,
      numClasses: dropout > 0 ? rows! - 1 : rows,
      classDropoutProb: dropout,
      learnSigma: outChannels === 2 * inChannels!
    }),
    assumed
  } satisfies Inferred
})

/** The preset a config is, if any ("DiT-XL/2", "TinyDiT-D14"). */
export const presetOf = (c: Config): PresetName | undefined =>
  presetNames.find((name) => (Object.keys(c) as Array<keyof Config>).every((k) => presets[name][k] === c[k]))
