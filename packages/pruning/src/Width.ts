/**
 * Structural width pruning of a DiT (Diff-Pruning in Table 1 and Fig. 4):
 * which channels go together, how a share of parameters maps to widths,
 * first-order Taylor importance per unit, and the narrower DiT made of the
 * kept channels — a regular DiT with the reference's keys, narrower shapes
 * and its widths in its config.
 *
 * The coupled groups are the ones Torch-Pruning's dependency graph finds in
 * DiT: a unit goes with every weight row and column that writes or reads it.
 *
 *   heads         per block, head h: its rows of q, k and v in attn.qkv and
 *                 its columns of attn.proj (the head width stays)
 *   mlp           per block, channel m: mlp.fc1 row m, mlp.fc2 column m
 *   hidden        the residual stream x: x_embedder rows, pos_embed's
 *                 channel, the columns of qkv, fc1 and final_layer.linear, the
 *                 rows of proj and fc2, and the rows of every adaLN output
 *                 chunk (shift, scale, gate) that modulates x
 *   conditioning  c = t_emb + y_emb: t_embedder.mlp.2 rows, the label
 *                 table's columns, the columns of every adaLN_modulation.1
 *   timestep      the t-MLP's hidden layer: t_embedder.mlp.0 rows, mlp.2 columns
 *
 * (biases go with their rows). hidden, conditioning and timestep are all
 * hidden_size in the reference constructor, so a pruned DiT keeps as many
 * channels of each; every block keeps as many heads and as many MLP
 * channels: one uniform share, as Diff-Pruning's one ratio for every group.
 */
import { Schema } from "effect"
import { Config, ModelArtifact } from "@tinyfusion/models"
import { HostTensor, ParamTree } from "@tinyfusion/tensor"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const Indices = Schema.Array(Index)

/** The channels a width-pruned DiT keeps, ascending, as teacher indices. */
export const Kept = Schema.Struct({
  hidden: Indices,
  conditioning: Indices,
  timestep: Indices,
  /** Per block, the heads kept. */
  heads: Schema.Array(Indices),
  /** Per block, the MLP hidden channels kept. */
  mlp: Schema.Array(Indices)
})
export type Kept = typeof Kept.Type

/** Per unit of every group (Float64), the same layout as Kept. */
export interface Scores {
  readonly hidden: Float64Array
  readonly conditioning: Float64Array
  readonly timestep: Float64Array
  readonly heads: ReadonlyArray<Float64Array>
  readonly mlp: ReadonlyArray<Float64Array>
}

const range = (n: number): Array<number> => Array.from({ length: n }, (_, i) => i)

/** Every channel of the config: the identity pruning. */
export const all = (config: Config.Config): Kept => ({
  hidden: range(config.hiddenSize),
  conditioning: range(config.hiddenSize),
  timestep: range(config.hiddenSize),
  heads: range(config.depth).map(() => range(config.numHeads)),
  mlp: range(config.depth).map(() => range(Config.mlpHidden(config)))
})

/**
 * The DiT that keeps `hidden` channels of the residual stream (and of the
 * conditioning and the t-MLP) and the same share, rounded, of every block's
 * heads and MLP channels (at least one of each). The head width is kept.
 */
export function narrowed(config: Config.Config, hidden: number): Config.Config {
  const share = hidden / config.hiddenSize
  const keep = (n: number) => Math.max(1, Math.round(share * n))
  return {
    ...config,
    hiddenSize: hidden,
    numHeads: keep(config.numHeads),
    headDim: Config.headDim(config),
    mlpHidden: keep(Config.mlpHidden(config))
  }
}

export interface Shape {
  readonly config: Config.Config
  /** The share of every width kept (hidden / the teacher's hidden). */
  readonly share: number
  readonly parameters: number
  /** The share of the teacher's parameters removed. */
  readonly removed: number
}

export class InvalidRatio extends Schema.TaggedError<InvalidRatio>()("InvalidRatio", {
  ratio: Schema.Number
}) {
  override get message(): string {
    return `a width-pruning ratio is the share of parameters removed, in [0, 1); got ${this.ratio}`
  }
}

/**
 * How a ratio of parameters removed (Table 1: 0.5, 0.75) maps to widths:
 * the residual width h among the multiples of 4 up to the teacher's (the
 * 2-D sin-cos position embedding needs a multiple of 4), with heads and MLP
 * channels at the same share h / hidden (`narrowed`), whose parameter count
 * is nearest (1 − ratio) × the teacher's; on a tie, the wider.
 */
export function forRatio(config: Config.Config, ratio: number): Shape {
  if (!(ratio >= 0 && ratio < 1)) throw new InvalidRatio({ ratio })
  const teacher = ModelArtifact.parameterCount(config)
  const target = (1 - ratio) * teacher
  let best: Shape | undefined
  for (let hidden = 4; hidden <= config.hiddenSize; hidden += 4) {
    const candidate = narrowed(config, hidden)
    const parameters = ModelArtifact.parameterCount(candidate)
    if (best === undefined || Math.abs(parameters - target) <= Math.abs(best.parameters - target)) {
      best = { config: candidate, share: hidden / config.hiddenSize, parameters, removed: 1 - parameters / teacher }
    }
  }
  return best!
}

/** Row and column sums of |w·g| for a weight viewed as [rows, rest] (float64). */
function saliency(w: HostTensor.HostTensor, g: HostTensor.HostTensor): { readonly rows: Float64Array; readonly cols: Float64Array } {
  const rows = w.shape[0]!
  const cols = w.data.length / rows
  if (g.data.length !== w.data.length) throw new Error(`a gradient of ${g.data.length} values for a weight of ${w.data.length}`)
  const r = new Float64Array(rows)
  const c = new Float64Array(cols)
  for (let o = 0; o < rows; o++) {
    for (let i = 0; i < cols; i++) {
      const v = Math.abs(w.data[o * cols + i]! * g.data[o * cols + i]!)
      r[o] += v
      c[i] += v
    }
  }
  return { rows: r, cols: c }
}

const addInto = (into: Float64Array, from: ArrayLike<number>, offset = 0) => {
  for (let i = 0; i < into.length; i++) into[i] += from[offset + i]!
}

/**
 * First-order Taylor importance of every unit, as Torch-Pruning's
 * TaylorImportance (multivariable = False, no bias) that Diff-Pruning uses:
 * Σ |w·g| over the weights of the Linear and Conv layers in the unit's group
 * — biases, the label table and pos_embed are pruned with the unit but not
 * scored. `g` is the accumulated gradient (missing keys score 0). Summed in
 * float64; the reference averages over the group's layers and normalises by
 * the mean, which does not change the order within a group.
 */
export function taylor(
  config: Config.Config,
  params: ReadonlyMap<string, HostTensor.HostTensor>,
  grads: ReadonlyMap<string, HostTensor.HostTensor>
): Scores {
  const d = config.hiddenSize
  const heads = config.numHeads
  const hd = Config.headDim(config)
  const width = heads * hd
  const mlp = Config.mlpHidden(config)
  const of = (key: string) => {
    const w = params.get(key)
    if (w === undefined) throw new Error(`the params have no ${key}`)
    return saliency(w, grads.get(key) ?? HostTensor.float32(w.shape, new Float32Array(w.data.length)))
  }
  const hidden = new Float64Array(d)
  const conditioning = new Float64Array(d)
  const timestep = new Float64Array(d)
  addInto(hidden, of("x_embedder.proj.weight").rows)
  const t0 = of("t_embedder.mlp.0.weight")
  const t2 = of("t_embedder.mlp.2.weight")
  addInto(timestep, t0.rows)
  addInto(timestep, t2.cols)
  addInto(conditioning, t2.rows)
  const modulation = (key: string, chunks: number) => {
    const s = of(key)
    for (let k = 0; k < chunks; k++) addInto(hidden, s.rows, k * d)
    addInto(conditioning, s.cols)
  }
  const blockHeads: Array<Float64Array> = []
  const blockMlp: Array<Float64Array> = []
  for (let l = 0; l < config.depth; l++) {
    const p = `blocks.${l}`
    const qkv = of(`${p}.attn.qkv.weight`)
    const proj = of(`${p}.attn.proj.weight`)
    addInto(hidden, qkv.cols)
    addInto(hidden, proj.rows)
    const h = new Float64Array(heads)
    for (let head = 0; head < heads; head++) {
      for (let e = 0; e < hd; e++) {
        for (let part = 0; part < 3; part++) h[head] += qkv.rows[part * width + head * hd + e]!
        h[head] += proj.cols[head * hd + e]!
      }
    }
    blockHeads.push(h)
    const fc1 = of(`${p}.mlp.fc1.weight`)
    const fc2 = of(`${p}.mlp.fc2.weight`)
    addInto(hidden, fc1.cols)
    addInto(hidden, fc2.rows)
    const m = new Float64Array(mlp)
    addInto(m, fc1.rows)
    addInto(m, fc2.cols)
    blockMlp.push(m)
    modulation(`${p}.adaLN_modulation.1.weight`, 6)
  }
  addInto(hidden, of("final_layer.linear.weight").cols)
  modulation("final_layer.adaLN_modulation.1.weight", 2)
  return { hidden, conditioning, timestep, heads: blockHeads, mlp: blockMlp }
}

/** The `k` highest-scored units, ascending (ties to the lower index). */
export const top = (scores: ArrayLike<number>, k: number): Array<number> =>
  range(scores.length).sort((a, b) => scores[b]! - scores[a]! || a - b).slice(0, k).sort((a, b) => a - b)

/** The units of the narrower shape `to` with the highest scores. */
export const select = (scores: Scores, to: Config.Config): Kept => ({
  hidden: top(scores.hidden, to.hiddenSize),
  conditioning: top(scores.conditioning, to.hiddenSize),
  timestep: top(scores.timestep, to.hiddenSize),
  heads: scores.heads.map((s) => top(s, to.numHeads)),
  mlp: scores.mlp.map((s) => top(s, Config.mlpHidden(to)))
})

/** What is wrong with a selection for a config (nothing: empty). */
export function issues(config: Config.Config, kept: Kept): Array<string> {
  const out: Array<string> = []
  const check = (name: string, xs: ReadonlyArray<number>, of: number) => {
    if (xs.length === 0) out.push(`${name} keeps nothing`)
    xs.forEach((x, i) => {
      if (x >= of) out.push(`${name} keeps ${x}, outside 0..${of - 1}`)
      if (i > 0 && x <= xs[i - 1]!) out.push(`${name} must be ascending and distinct`)
    })
  }
  check("hidden", kept.hidden, config.hiddenSize)
  check("conditioning", kept.conditioning, config.hiddenSize)
  check("timestep", kept.timestep, config.hiddenSize)
  const h = kept.hidden.length
  if (kept.conditioning.length !== h || kept.timestep.length !== h) {
    out.push(`hidden, conditioning and timestep keep ${h}, ${kept.conditioning.length} and ${kept.timestep.length} channels: a DiT has one hidden_size`)
  }
  if (h % 4 !== 0) out.push(`hidden keeps ${h} channels, not a multiple of 4`)
  for (const [name, per, of] of [["heads", kept.heads, config.numHeads], ["mlp", kept.mlp, Config.mlpHidden(config)]] as const) {
    if (per.length !== config.depth) out.push(`${name} is given for ${per.length} blocks of ${config.depth}`)
    per.forEach((xs, l) => check(`block ${l} ${name}`, xs, of))
    if (per.some((xs) => xs.length !== per[0]?.length)) out.push(`blocks keep different numbers of ${name}: pruning is uniform`)
  }
  return out
}

/** The config of the DiT a selection makes. */
export const configOf = (config: Config.Config, kept: Kept): Config.Config => ({
  ...config,
  hiddenSize: kept.hidden.length,
  numHeads: kept.heads[0]!.length,
  headDim: Config.headDim(config),
  mlpHidden: kept.mlp[0]!.length
})

/** Rows (of the leading axis) and columns (of the flattened rest) of a tensor; undefined keeps all. */
function gather(t: HostTensor.HostTensor, rows: ReadonlyArray<number> | undefined, cols: ReadonlyArray<number> | undefined): HostTensor.HostTensor {
  const n = t.shape[0]!
  const rest = t.data.length / n
  const r = rows ?? range(n)
  const c = cols ?? range(rest)
  const out = new Float32Array(r.length * c.length)
  r.forEach((row, i) => c.forEach((col, j) => (out[i * c.length + j] = t.data[row * rest + col]!)))
  const shape = cols === undefined ? [r.length, ...t.shape.slice(1)] : t.shape.length === 1 ? [r.length] : [r.length, c.length]
  return HostTensor.float32(shape, out)
}

/** Rows part·width + h·hd + e of qkv for the kept heads, q then k then v. */
const headRows = (heads: ReadonlyArray<number>, hd: number, width: number, parts: number) =>
  range(parts).flatMap((part) => heads.flatMap((h) => range(hd).map((e) => part * width + h * hd + e)))

/** Rows k·d + j of an adaLN output for the kept channels j of each of its chunks. */
const chunkRows = (kept: ReadonlyArray<number>, d: number, chunks: number) => range(chunks).flatMap((k) => kept.map((j) => k * d + j))

/**
 * Every tensor of the reference state_dict cut to the kept channels (host
 * tensors; nothing is shared with the input), unchecked: a selection that is
 * not uniform gives tensors that no config describes. `narrow` is the
 * checked cut.
 */
export function cut(config: Config.Config, params: HostTensor.HostTree, kept: Kept): HostTensor.HostTree {
  const flat = new Map(ParamTree.flatten(params, HostTensor.isHostTensor))
  const d = config.hiddenSize
  const hd = Config.headDim(config)
  const width = config.numHeads * hd
  const { hidden, conditioning, timestep } = kept
  const out = new Map<string, HostTensor.HostTensor>()
  const linear = (prefix: string, rows: ReadonlyArray<number> | undefined, cols: ReadonlyArray<number> | undefined) => {
    out.set(`${prefix}.weight`, gather(flat.get(`${prefix}.weight`)!, rows, cols))
    out.set(`${prefix}.bias`, gather(flat.get(`${prefix}.bias`)!, rows, undefined))
  }
  const pos = flat.get("pos_embed")!
  const tokens = pos.shape[1]!
  const position = new Float32Array(tokens * hidden.length)
  for (let t = 0; t < tokens; t++) hidden.forEach((j, i) => (position[t * hidden.length + i] = pos.data[t * d + j]!))
  out.set("pos_embed", HostTensor.float32([1, tokens, hidden.length], position))
  linear("x_embedder.proj", hidden, undefined)
  linear("t_embedder.mlp.0", timestep, undefined)
  linear("t_embedder.mlp.2", conditioning, timestep)
  out.set("y_embedder.embedding_table.weight", gather(flat.get("y_embedder.embedding_table.weight")!, undefined, conditioning))
  for (let l = 0; l < config.depth; l++) {
    const p = `blocks.${l}`
    const heads = kept.heads[l]!
    linear(`${p}.attn.qkv`, headRows(heads, hd, width, 3), hidden)
    linear(`${p}.attn.proj`, hidden, headRows(heads, hd, width, 1))
    linear(`${p}.mlp.fc1`, kept.mlp[l]!, hidden)
    linear(`${p}.mlp.fc2`, hidden, kept.mlp[l]!)
    linear(`${p}.adaLN_modulation.1`, chunkRows(hidden, d, 6), conditioning)
  }
  linear("final_layer.linear", undefined, hidden)
  linear("final_layer.adaLN_modulation.1", chunkRows(hidden, d, 2), conditioning)
  return ParamTree.unflatten([...flat.keys()].map((k) => [k, out.get(k)!] as const))
}

/**
 * The narrower DiT of the kept channels: its config (the widths recorded)
 * and its weights. Throws, naming what does not fit, when the selection is
 * not a uniform one of this config.
 */
export function narrow(
  config: Config.Config,
  params: HostTensor.HostTree,
  kept: Kept
): { readonly config: Config.Config; readonly params: HostTensor.HostTree } {
  const found = issues(config, kept)
  if (found.length > 0) throw new Error(`width selection does not fit ${Config.describe(config)}: ${found.slice(0, 5).join("; ")}`)
  return { config: configOf(config, kept), params: cut(config, params, kept) }
}
