/**
 * The mean and covariance of a feature set, as ADM's evaluator keeps them
 * (`mu`, `sigma`: float64, covariance with the N − 1 divisor). Computed
 * streaming over batches so that 50K samples never sit in memory at once, and
 * stored as a safetensors file of F64 tensors.
 *
 * Batches are merged with Chan, Golub & LeVeque's pairwise update: each batch
 * is centred on its own mean before its outer products are summed, so the
 * result does not suffer the cancellation of Σxxᵀ − N·μμᵀ when features have
 * a large mean.
 */
import { Effect, Schema } from "effect"
import { Safetensors } from "@tinyfusion/tensor"
import * as Matrix from "./Matrix.ts"

export interface FeatureStatistics {
  /** How many feature vectors the statistics summarise. */
  readonly count: number
  /** D values. */
  readonly mean: Float64Array
  /** D×D, row-major, symmetric. */
  readonly covariance: Float64Array
}

export const dimension = (s: FeatureStatistics): number => s.mean.length

/** Rows per pass over the running sum of outer products: a block stays in cache while each of its rows is added. */
const BLOCK_ROWS = 32

export interface Accumulator {
  readonly dimension: number
  readonly count: number
  /** Adds a batch of feature vectors (rows). */
  readonly add: (batch: Matrix.Matrix) => Effect.Effect<void, Matrix.InvalidFeatures>
  /** The statistics of everything added so far (at least 2 rows). */
  readonly result: Effect.Effect<FeatureStatistics, Matrix.InvalidFeatures>
  /** The raw moments so far (any count): the mean and the upper triangle of Σ (x − μ)(x − μ)ᵀ, copied. */
  readonly moments: () => Moments
}

export interface Moments {
  readonly count: number
  readonly mean: Float64Array
  /** D×D row-major; only the upper triangle (j ≥ i) is set. */
  readonly m2: Float64Array
}

/** A streaming accumulator for D-dimensional features; `input` names them in errors. */
export const accumulator = (dim: number, input = "features"): Accumulator => {
  let count = 0
  const mean = new Float64Array(dim)
  // Upper triangle of Σ (x − μ)(x − μ)ᵀ.
  const m2 = new Float64Array(dim * dim)
  const batchMean = new Float64Array(dim)
  const block = new Float64Array(BLOCK_ROWS * dim)

  // m2[i][j] += Σ_r block[r][i]·block[r][j] for j ≥ i, four rows at a time so
  // each value of m2 is loaded and stored once per four products.
  const addBlock = (rows: number) => {
    for (let i = 0; i < dim; i++) {
      const mi = i * dim
      let r = 0
      for (; r + 3 < rows; r += 4) {
        const b0 = r * dim
        const b1 = b0 + dim
        const b2 = b1 + dim
        const b3 = b2 + dim
        const c0 = block[b0 + i]!
        const c1 = block[b1 + i]!
        const c2 = block[b2 + i]!
        const c3 = block[b3 + i]!
        for (let j = i; j < dim; j++) {
          m2[mi + j] = m2[mi + j]! + c0 * block[b0 + j]! + c1 * block[b1 + j]! + c2 * block[b2 + j]! + c3 * block[b3 + j]!
        }
      }
      for (; r < rows; r++) {
        const b0 = r * dim
        const c0 = block[b0 + i]!
        for (let j = i; j < dim; j++) m2[mi + j] = m2[mi + j]! + c0 * block[b0 + j]!
      }
    }
  }

  const add = Effect.fn("FeatureStatistics.add")(function*(batch: Matrix.Matrix) {
    yield* Matrix.validate(input, batch, { cols: dim, minRows: 0 })
    const b = batch.rows
    if (b === 0) return
    const x = batch.data
    batchMean.fill(0)
    for (let r = 0; r < b; r++) for (let j = 0; j < dim; j++) batchMean[j] = batchMean[j]! + x[r * dim + j]!
    for (let j = 0; j < dim; j++) batchMean[j] = batchMean[j]! / b
    // The batch's own scatter matrix, block by block.
    for (let start = 0; start < b; start += BLOCK_ROWS) {
      const rows = Math.min(BLOCK_ROWS, b - start)
      for (let r = 0; r < rows; r++) {
        const from = (start + r) * dim
        for (let j = 0; j < dim; j++) block[r * dim + j] = x[from + j]! - batchMean[j]!
      }
      addBlock(rows)
    }
    // Merge with what came before: M2 += δδᵀ·nA·nB/n, μ += δ·nB/n.
    const total = count + b
    const weight = (count * b) / total
    for (let j = 0; j < dim; j++) block[j] = batchMean[j]! - mean[j]!
    for (let i = 0; i < dim; i++) {
      const di = block[i]! * weight
      for (let j = i; j < dim; j++) m2[i * dim + j] = m2[i * dim + j]! + di * block[j]!
    }
    for (let j = 0; j < dim; j++) mean[j] = mean[j]! + (block[j]! * b) / total
    count = total
  })

  const result = Effect.suspend(() => {
    if (count < 2) {
      return Effect.fail(new Matrix.InvalidFeatures({ input, reason: `${count} feature vectors; a covariance needs at least 2` }))
    }
    const covariance = new Float64Array(dim * dim)
    for (let i = 0; i < dim; i++) {
      for (let j = i; j < dim; j++) {
        const v = m2[i * dim + j]! / (count - 1)
        covariance[i * dim + j] = v
        covariance[j * dim + i] = v
      }
    }
    return Effect.succeed({ count, mean: Float64Array.from(mean), covariance })
  })

  return {
    dimension: dim,
    get count() {
      return count
    },
    add,
    result,
    moments: () => ({ count, mean: Float64Array.from(mean), m2: Float64Array.from(m2) })
  }
}

/** The statistics of one matrix of features. */
export const fromMatrix = Effect.fn("FeatureStatistics.fromMatrix")(function*(input: string, m: Matrix.Matrix) {
  const acc = accumulator(m.cols, input)
  yield* acc.add(m)
  return yield* acc.result
})

/** A stored statistics file that cannot be used. */
export class InvalidStatistics extends Schema.TaggedError<InvalidStatistics>()("InvalidStatistics", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid feature statistics file: ${this.reason}`
  }
}

const Metadata = Schema.Struct({
  format: Schema.Literal("tinyfusion/feature-statistics"),
  count: Schema.NumberFromString.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(2))
})

/** Safetensors bytes: `mean` F64 [D], `covariance` F64 [D, D]; the count in the metadata. */
export const encode = (s: FeatureStatistics): Uint8Array => {
  const d = dimension(s)
  return Safetensors.encode(
    [
      ["mean", { dtype: "float64", shape: [d], data: s.mean }],
      ["covariance", { dtype: "float64", shape: [d, d], data: s.covariance }]
    ],
    { metadata: { format: "tinyfusion/feature-statistics", count: String(s.count) } }
  )
}

/**
 * Reads what `encode` wrote, checking that the file holds a mean and a
 * symmetric covariance of matching sizes with finite values and a
 * non-negative diagonal.
 */
export const decode = Effect.fn("FeatureStatistics.decode")(function*(bytes: Uint8Array) {
  const fail = (reason: string) => Effect.fail(new InvalidStatistics({ reason }))
  const file = yield* Safetensors.decode(bytes).pipe(Effect.mapError((e) => new InvalidStatistics({ reason: e.reason })))
  const { count } = yield* Schema.decodeUnknownEffect(Metadata)(file.metadata).pipe(
    Effect.mapError((e) => new InvalidStatistics({ reason: `metadata: ${e.message}` }))
  )
  const mean = file.float64.get("mean")
  const covariance = file.float64.get("covariance")
  if (mean === undefined || covariance === undefined) {
    return yield* fail(`needs F64 tensors "mean" and "covariance", found ${[...file.dtypes].map(([k, t]) => `${k} (${t})`).join(", ") || "none"}`)
  }
  const d = mean.length
  const shape = file.tensors.get("covariance")!.shape
  if (shape.length !== 2 || shape[0] !== d || shape[1] !== d) {
    return yield* fail(`covariance has shape [${shape}], the mean has ${d} values`)
  }
  if (!mean.every(Number.isFinite) || !covariance.every(Number.isFinite)) return yield* fail("non-finite values")
  let maxDiagonal = 0
  for (let i = 0; i < d; i++) {
    const v = covariance[i * d + i]!
    if (v < 0) return yield* fail(`covariance diagonal ${i} is negative (${v})`)
    maxDiagonal = Math.max(maxDiagonal, v)
  }
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < i; j++) {
      if (Math.abs(covariance[i * d + j]! - covariance[j * d + i]!) > 1e-9 * maxDiagonal) {
        return yield* fail(`covariance is not symmetric at (${i}, ${j})`)
      }
    }
  }
  return { count, mean, covariance } satisfies FeatureStatistics
})
