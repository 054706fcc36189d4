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

/** A feature set with its k-NN radii and, for the bootstrap, its rows cut into consecutive groups. */
export interface Manifold {
  readonly features: Matrix.Matrix
  readonly radii: Float32Array
  /** G + 1 row offsets: group g holds rows [groups[g], groups[g + 1]). Absent: one group of every row. */
  readonly groups?: Int32Array
}

/**
 * Which groups' k-NN balls hold each point of the other set, as bit masks
 * of ⌈G/32⌉ words per point: `samples` row j has bit g set when some point of
 * reference group g holds sample j in its ball; `reference` row i likewise
 * for the sample groups. Precision and recall are the shares of points with
 * any bit set; a bootstrap replicate that draws only some groups keeps the
 * bits of the drawn groups (`shares`).
 */
export interface Coverage {
  readonly sampleGroups: number
  readonly referenceGroups: number
  /** [samples × words(referenceGroups)] */
  readonly samples: Uint32Array
  /** [reference × words(sampleGroups)] */
  readonly reference: Uint32Array
}

export const words = (groups: number): number => Math.ceil(groups / 32)

const groupsOf = (name: string, m: Manifold) =>
  Effect.gen(function*() {
    const n = m.features.rows
    const g = m.groups ?? Int32Array.of(0, n)
    const ordered = g.length >= 2 && g[0] === 0 && g[g.length - 1] === n && g.every((x, i) => i === 0 || x > g[i - 1]!)
    if (!ordered) return yield* new Matrix.InvalidFeatures({ input: `${name} groups`, reason: `offsets [${[...g]}] do not cut ${n} rows into non-empty groups` })
    return g
  })

/** One-hot group membership of rows [start, end): [end − start, G] (float32, for a counting matmul). */
const membership = (groups: Int32Array, start: number, end: number): tf.Tensor2D => {
  const g = groups.length - 1
  const out = new Float32Array((end - start) * g)
  let group = 0
  for (let r = start; r < end; r++) {
    while (groups[group + 1]! <= r) group++
    out[(r - start) * g + group] = 1
  }
  return tf.tensor2d(out, [end - start, g])
}

/** Sets bit g of row r's mask where counts[r, g] > 0. */
const orBits = (masks: Uint32Array, perRow: number, firstRow: number, counts: Float32Array | Int32Array | Uint8Array, rows: number, g: number) => {
  for (let r = 0; r < rows; r++) {
    const base = (firstRow + r) * perRow
    for (let j = 0; j < g; j++) if (counts[r * g + j]! > 0) masks[base + (j >>> 5)] = masks[base + (j >>> 5)]! | (1 << (j & 31))
  }
}

/** The coverage masks of `samples` against `reference` (radii from `radii`; the reference's can be stored with it). */
export const coverage = Effect.fn("PrecisionRecall.coverage")(function*(
  reference: Manifold,
  samples: Manifold,
  options: Options = {}
): Effect.fn.Return<Coverage, Matrix.InvalidFeatures | ComputeError, Compute> {
  const { blockSize } = yield* settings(options)
  const ref = yield* Matrix.validate("reference", reference.features, { minRows: 1 })
  const smp = yield* Matrix.validate("samples", samples.features, { cols: ref.cols, minRows: 1 })
  if (reference.radii.length !== ref.rows || samples.radii.length !== smp.rows) {
    return yield* new Matrix.InvalidFeatures({
      input: "radii",
      reason: `${reference.radii.length} reference and ${samples.radii.length} sample radii for ${ref.rows} and ${smp.rows} points`
    })
  }
  const refGroups = yield* groupsOf("reference", reference)
  const smpGroups = yield* groupsOf("samples", samples)
  const gr = refGroups.length - 1
  const gs = smpGroups.length - 1
  const compute = yield* Compute
  const out: Coverage = {
    sampleGroups: gs,
    referenceGroups: gr,
    samples: new Uint32Array(smp.rows * words(gr)),
    reference: new Uint32Array(ref.rows * words(gs))
  }
  for (let r0 = 0; r0 < ref.rows; r0 += blockSize) {
    const r1 = Math.min(ref.rows, r0 + blockSize)
    for (let c0 = 0; c0 < smp.rows; c0 += blockSize) {
      const c1 = Math.min(smp.rows, c0 + blockSize)
      const [inSampleBalls, inReferenceBalls] = yield* compute.scoped(Effect.gen(function*() {
        const d = pairwise(upload(ref, r0, r1), upload(smp, c0, c1))
        const sampleRadii = tf.tensor2d(samples.radii.subarray(c0, c1), [1, c1 - c0])
        const referenceRadii = tf.tensor2d(reference.radii.subarray(r0, r1), [r1 - r0, 1])
        // Per reference point, balls of each sample group holding it; per sample, each reference group's.
        const bySampleGroup = tf.matMul(tf.cast(tf.lessEqual(d, sampleRadii), "float32"), membership(smpGroups, c0, c1))
        const byReferenceGroup = tf.matMul(tf.cast(tf.lessEqual(d, referenceRadii), "float32"), membership(refGroups, r0, r1), true, false)
        return [yield* compute.read(bySampleGroup), yield* compute.read(byReferenceGroup)] as const
      }))
      orBits(out.reference, words(gs), r0, inSampleBalls, r1 - r0, gs)
      orBits(out.samples, words(gr), c0, inReferenceBalls, c1 - c0, gr)
    }
  }
  return out
})

const anyBit = (masks: Uint32Array, perRow: number, row: number, drawn: Uint32Array): boolean => {
  for (let w = 0; w < perRow; w++) if ((masks[row * perRow + w]! & drawn[w]!) !== 0) return true
  return false
}

/** Bit masks with every group set. */
export const allGroups = (groups: number): Uint32Array => {
  const out = new Uint32Array(words(groups))
  for (let g = 0; g < groups; g++) out[g >>> 5] = out[g >>> 5]! | (1 << (g & 31))
  return out
}

/**
 * Precision and recall from coverage masks, counting only the balls of the
 * drawn groups (`drawnReference`, `drawnSamples`: masks as `allGroups`
 * gives) and weighting each point by its row's weight (a bootstrap
 * multiplicity; absent: 1).
 */
export const shares = (
  c: Coverage,
  drawn: { readonly reference: Uint32Array; readonly samples: Uint32Array } = { reference: allGroups(c.referenceGroups), samples: allGroups(c.sampleGroups) },
  weights?: { readonly reference: ArrayLike<number>; readonly samples: ArrayLike<number> }
): Result => {
  const share = (masks: Uint32Array, perRow: number, rows: number, groups: Uint32Array, w: ArrayLike<number> | undefined) => {
    let inside = 0
    let total = 0
    for (let r = 0; r < rows; r++) {
      const weight = w === undefined ? 1 : w[r]!
      if (weight === 0) continue
      total += weight
      if (anyBit(masks, perRow, r, groups)) inside += weight
    }
    return inside / total
  }
  const perSample = words(c.referenceGroups)
  const perReference = words(c.sampleGroups)
  return {
    precision: share(c.samples, perSample, c.samples.length / perSample, drawn.reference, weights?.samples),
    recall: share(c.reference, perReference, c.reference.length / perReference, drawn.samples, weights?.reference)
  }
}

/**
 * Precision and recall of `samples` against `reference`, given the radii of
 * both sets (from `radii`; the reference's can be stored with it).
 */
export const evaluate = Effect.fn("PrecisionRecall.evaluate")(function*(
  reference: Manifold,
  samples: Manifold,
  options: Options = {}
): Effect.fn.Return<Result, Matrix.InvalidFeatures | ComputeError, Compute> {
  return shares(yield* coverage(reference, samples, options))
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
