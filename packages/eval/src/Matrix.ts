/**
 * Feature matrices: N rows (images) × D columns (features), row-major, in
 * float32 (as feature networks produce them) or float64. The metrics take
 * these host arrays, never device tensors, so stored features and freshly
 * extracted ones go through the same code.
 */
import { Effect, Schema } from "effect"

export interface Matrix {
  readonly rows: number
  readonly cols: number
  readonly data: Float32Array | Float64Array
}

/** Features that a metric cannot use: wrong shape, too few rows, non-finite or invalid values. */
export class InvalidFeatures extends Schema.TaggedError<InvalidFeatures>()("InvalidFeatures", {
  /** Which input, e.g. "samples.pooled" or "reference statistics". */
  input: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid features (${this.input}): ${this.reason}`
  }
}

export const make = (rows: number, cols: number, data: Float32Array | Float64Array): Matrix => {
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 1) {
    throw new Error(`a matrix needs rows ≥ 0 and cols ≥ 1, got ${rows}×${cols}`)
  }
  if (data.length !== rows * cols) throw new Error(`a ${rows}×${cols} matrix needs ${rows * cols} values, got ${data.length}`)
  return { rows, cols, data }
}

/** Rows [start, end) as a view (no copy). */
export const slice = (m: Matrix, start: number, end: number): Matrix =>
  make(end - start, m.cols, m.data.subarray(start * m.cols, end * m.cols))

/** Rows of several matrices with the same column count, one after another. */
export const concat = (parts: ReadonlyArray<Matrix>, cols: number): Matrix => {
  const rows = parts.reduce((n, p) => n + p.rows, 0)
  const data = new Float32Array(rows * cols)
  let at = 0
  for (const p of parts) {
    if (p.cols !== cols) throw new Error(`cannot concatenate a ${p.rows}×${p.cols} matrix into ${cols} columns`)
    data.set(p.data, at)
    at += p.data.length
  }
  return make(rows, cols, data)
}

/** Fails unless `m` has `cols` columns, at least `minRows` rows and only finite values. */
export const validate = Effect.fn("Matrix.validate")(function*(
  input: string,
  m: Matrix,
  expected: { readonly cols?: number; readonly minRows: number }
) {
  if (expected.cols !== undefined && m.cols !== expected.cols) {
    return yield* new InvalidFeatures({ input, reason: `${m.cols} columns, expected ${expected.cols}` })
  }
  if (m.rows < expected.minRows) {
    return yield* new InvalidFeatures({ input, reason: `${m.rows} rows, at least ${expected.minRows} needed` })
  }
  const bad = m.data.findIndex((x) => !Number.isFinite(x))
  if (bad >= 0) {
    return yield* new InvalidFeatures({
      input,
      reason: `value ${m.data[bad]} at row ${Math.floor(bad / m.cols)}, column ${bad % m.cols} is not finite`
    })
  }
  return m
})

/**
 * The spatial features of sFID from an NHWC feature map: its first `channels`
 * channels (ADM takes 7 of Inception's mixed_6/conv), flattened per image in
 * (row, column, channel) order as ADM's reshape of the NHWC slice does.
 */
export const spatial = (
  map: Float32Array,
  shape: readonly [number, number, number, number],
  channels = 7
): Matrix => {
  const [n, h, w, c] = shape
  if (map.length !== n * h * w * c) throw new Error(`an NHWC map of shape [${shape}] needs ${n * h * w * c} values, got ${map.length}`)
  if (channels > c) throw new Error(`asked for the first ${channels} channels of a map with ${c}`)
  const out = new Float32Array(n * h * w * channels)
  for (let pixel = 0; pixel < n * h * w; pixel++) {
    out.set(map.subarray(pixel * c, pixel * c + channels), pixel * channels)
  }
  return make(n, h * w * channels, out)
}
