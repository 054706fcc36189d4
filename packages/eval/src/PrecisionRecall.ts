/**
 * Improved precision and recall (Kynkäänniemi et al. 2019) with the semantics
 * of ADM's ManifoldEstimator:
 * - the radius of a point is its squared distance to its k-th nearest
 *   neighbour within its own set, counting the point itself as the 0th
 *   (k = 3);
 * - precision = share of samples inside some reference ball (distance ≤ radius),
 *   recall = share of reference points inside some sample ball.
 *
 * Squared distances ‖u‖² − 2u·v + ‖v‖² (clamped at 0) are computed on the
 * active Compute backend in float32, block by block, so neither the N×N
 * distance matrix nor more than two blocks of features are ever on the
 * device. The reference tries float16 first and falls back to float32 when
 * that overflows; float32 throughout is at least as exact.
 */
import { Effect } from "effect"
import { Compute, type ComputeError, tf } from "@tinyfusion/tensor"
import * as Matrix from "./Matrix.ts"

export interface Options {
  /** Neighbourhood size (default 3). */
  readonly k?: number
  /** Rows (and columns) per block of the distance matrix (default 1024). */
  readonly blockSize?: number
}

export interface Result {
  readonly precision: number
  readonly recall: number
}

const settings = Effect.fnUntraced(function*(options: Options) {
  const k = options.k ?? 3
  const blockSize = options.blockSize ?? 1024
  for (const [name, value] of [["k", k], ["block size", blockSize]] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      return yield* new Matrix.InvalidFeatures({ input: "precision/recall options", reason: `${name} must be a positive integer, got ${value}` })
    }
  }
  return { k, blockSize }
})

const upload = (m: Matrix.Matrix, start: number, end: number): tf.Tensor2D => {
  const values = m.data.subarray(start * m.cols, end * m.cols)
  return tf.tensor2d(values instanceof Float32Array ? values : Float32Array.from(values), [end - start, m.cols])
}

/** Squared Euclidean distances between the rows of u and of v: [rows u, rows v]. */
const pairwise = (u: tf.Tensor2D, v: tf.Tensor2D): tf.Tensor2D => {
  const nu = tf.sum(tf.square(u), 1, true)
  const nv = tf.reshape(tf.sum(tf.square(v), 1), [1, -1])
  return tf.relu(tf.add(tf.sub(nu, tf.mul(tf.matMul(u, v, false, true), 2)), nv))
}

/** The k-th nearest-neighbour squared distance of every row within its own set. */
export const radii = Effect.fn("PrecisionRecall.radii")(function*(input: string, features: Matrix.Matrix, options: Options = {}) {
  const { k, blockSize } = yield* settings(options)
  yield* Matrix.validate(input, features, { minRows: k + 1 })
  const compute = yield* Compute
  const n = features.rows
  const out = new Float32Array(n)
  for (let r0 = 0; r0 < n; r0 += blockSize) {
    const r1 = Math.min(n, r0 + blockSize)
    const kth = yield* compute.scoped(Effect.gen(function*() {
      const u = upload(features, r0, r1)
      // The k + 1 smallest distances of each row seen so far, ascending (the point itself included).
      let nearest: tf.Tensor2D | undefined
      for (let c0 = 0; c0 < n; c0 += blockSize) {
        const previous = nearest
        nearest = compute.tidy(() => {
          const d = pairwise(u, upload(features, c0, Math.min(n, c0 + blockSize)))
          const joined = previous === undefined ? d : tf.concat([previous, d], 1)
          return tf.neg(tf.topk(tf.neg(joined), Math.min(k + 1, joined.shape[1])).values) as tf.Tensor2D
        })
        previous?.dispose()
      }
      return yield* compute.read(tf.slice(nearest!, [0, k], [r1 - r0, 1]))
    }))
    out.set(kth, r0)
  }
  return out
})

/**
 * Precision and recall of `samples` against `reference`, given the radii of
 * both sets (from `radii`; the reference's can be stored with it).
 */
export const evaluate = Effect.fn("PrecisionRecall.evaluate")(function*(
  reference: { readonly features: Matrix.Matrix; readonly radii: Float32Array },
  samples: { readonly features: Matrix.Matrix; readonly radii: Float32Array },
  options: Options = {}
): Effect.fn.Return<Result, Matrix.InvalidFeatures | ComputeError, Compute> {
  const { blockSize } = yield* settings(options)
  const ref = yield* Matrix.validate("reference", reference.features, { minRows: 1 })
  const smp = yield* Matrix.validate("samples", samples.features, { cols: ref.cols, minRows: 1 })
  if (reference.radii.length !== ref.rows || samples.radii.length !== smp.rows) {
    return yield* new Matrix.InvalidFeatures({
      input: "radii",
      reason: `${reference.radii.length} reference and ${samples.radii.length} sample radii for ${ref.rows} and ${smp.rows} points`
    })
  }
  const compute = yield* Compute
  // Reference points inside some sample ball (recall), samples inside some reference ball (precision).
  const referenceIn = new Uint8Array(ref.rows)
  const sampleIn = new Uint8Array(smp.rows)
  for (let r0 = 0; r0 < ref.rows; r0 += blockSize) {
    const r1 = Math.min(ref.rows, r0 + blockSize)
    for (let c0 = 0; c0 < smp.rows; c0 += blockSize) {
      const c1 = Math.min(smp.rows, c0 + blockSize)
      const flags = yield* compute.scoped(Effect.gen(function*() {
        const d = pairwise(upload(ref, r0, r1), upload(smp, c0, c1))
        const sampleRadii = tf.tensor2d(samples.radii.subarray(c0, c1), [1, c1 - c0])
        const referenceRadii = tf.tensor2d(reference.radii.subarray(r0, r1), [r1 - r0, 1])
        const refInSample = tf.any(tf.lessEqual(d, sampleRadii), 1)
        const sampleInRef = tf.any(tf.lessEqual(d, referenceRadii), 0)
        return yield* compute.read(tf.concat([tf.cast(refInSample, "int32"), tf.cast(sampleInRef, "int32")]))
      }))
      for (let i = 0; i < r1 - r0; i++) referenceIn[r0 + i] = referenceIn[r0 + i]! | flags[i]!
      for (let j = 0; j < c1 - c0; j++) sampleIn[c0 + j] = sampleIn[c0 + j]! | flags[r1 - r0 + j]!
    }
  }
  const share = (flags: Uint8Array) => flags.reduce((s, x) => s + x, 0) / flags.length
  return { precision: share(sampleIn), recall: share(referenceIn) }
})

/** Precision and recall (k = 3 by default) from the two feature sets alone. */
export const compute = Effect.fn("PrecisionRecall.compute")(function*(
  reference: Matrix.Matrix,
  samples: Matrix.Matrix,
  options: Options = {}
) {
  const referenceRadii = yield* radii("reference", reference, options)
  const sampleRadii = yield* radii("samples", samples, options)
  return yield* evaluate({ features: reference, radii: referenceRadii }, { features: samples, radii: sampleRadii }, options)
})
