/**
 * Images to the metrics' feature matrices, the one path that reference images
 * and generated samples both take: 8-bit pixels (a dataset's, or samples
 * quantised as ADM's evaluator receives them from the saved PNG/npz), mapped
 * to [-1, 1] as every batch of the data package is, through the
 * FeatureExtractor service.
 *
 * A feature set (pooled features, class probabilities, optionally k-NN radii
 * and labels) is stored as one safetensors file.
 */
import { Effect } from "effect"
import { CorruptArtifact } from "@tinyfusion/core"
import { Batches, Extraction, FeatureExtractor, Images } from "@tinyfusion/data"
import { type Compute, type ComputeError, HostTensor, Safetensors } from "@tinyfusion/tensor"
import * as Matrix from "./Matrix.ts"
import type * as Metrics from "./Metrics.ts"

/** Extracts the features of `pixels` (NHWC bytes of `count` images of the extractor's shape) in one batch. */
export const ofPixels = Effect.fn("Features.ofPixels")(function*(
  pixels: Uint8Array,
  count: number
): Effect.fn.Return<Metrics.FeatureBatch, ComputeError, FeatureExtractor | Compute> {
  const extractor = yield* FeatureExtractor
  const [height, width, channels] = extractor.imageShape
  const set = Images.make({ height, width, channels }, pixels, new Int32Array(count))
  const out = yield* Extraction.extract(Batches.range(set, 0, count).images, count, Math.max(1, count))
  return {
    pooled: Matrix.make(count, extractor.poolDim, out.pool),
    spatial: Matrix.make(count, extractor.spatialDim, out.spatial),
    probabilities: Matrix.make(count, extractor.classes, out.probs)
  }
})

/** Where a feature set is stored in an artifact. */
export const file = "features.safetensors"

export interface FeatureSet {
  /** [N, D] */
  readonly pooled: Matrix.Matrix
  /** [N, D_s] spatial features (a reference keeps them for the bootstrap of sFID). */
  readonly spatial?: Matrix.Matrix
  /** [N, classes] */
  readonly probabilities: Matrix.Matrix
  /** [N] squared distance of each pooled feature to its k-th neighbour in the set. */
  readonly radii?: Float32Array
  /** [N] the class each image was made for (samples). */
  readonly labels?: Int32Array
}

const f32 = (m: Matrix.Matrix) => HostTensor.float32([m.rows, m.cols], m.data instanceof Float32Array ? m.data : Float32Array.from(m.data))

export const encode = (set: FeatureSet): Uint8Array =>
  Safetensors.encode(
    [
      ["pooled", f32(set.pooled)],
      ["probabilities", f32(set.probabilities)],
      ...(set.spatial === undefined ? [] : [["spatial", f32(set.spatial)] as const]),
      ...(set.radii === undefined ? [] : [["radii", HostTensor.float32([set.radii.length], set.radii)] as const]),
      ...(set.labels === undefined ? [] : [["labels", HostTensor.int32([set.labels.length], set.labels)] as const])
    ],
    { metadata: { format: "tinyfusion/features" } }
  )

/**
 * Reads a stored feature set, checking every tensor against the dimensions
 * the artifact's output gives; `where` names the artifact and file in errors.
 */
export const decode = Effect.fn("Features.decode")(function*(
  bytes: Uint8Array,
  expected: { readonly count: number; readonly poolDim: number; readonly classes: number; readonly spatialDim?: number },
  where: { readonly key: string; readonly path: string }
) {
  const fail = (reason: string) => new CorruptArtifact({ ...where, reason })
  const file = yield* Safetensors.decode(bytes).pipe(Effect.mapError((e) => fail(e.reason)))
  const tensor = (name: string, dtype: "float32" | "int32", shape: ReadonlyArray<number>, required: boolean) =>
    Effect.gen(function*() {
      const t = file.tensors.get(name)
      if (t === undefined) return required ? yield* fail(`no tensor ${name}`) : undefined
      if (t.dtype !== dtype) return yield* fail(`${name} is ${t.dtype}, expected ${dtype}`)
      if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) {
        return yield* fail(`${name} has shape [${t.shape}], expected [${shape}]`)
      }
      return t
    })
  const { count, poolDim, classes } = expected
  const pooled = yield* tensor("pooled", "float32", [count, poolDim], true)
  const probabilities = yield* tensor("probabilities", "float32", [count, classes], true)
  const spatial = expected.spatialDim === undefined ? undefined : yield* tensor("spatial", "float32", [count, expected.spatialDim], true)
  const radii = yield* tensor("radii", "float32", [count], false)
  const labels = yield* tensor("labels", "int32", [count], false)
  return {
    pooled: Matrix.make(count, poolDim, pooled!.data as Float32Array),
    probabilities: Matrix.make(count, classes, probabilities!.data as Float32Array),
    ...(spatial === undefined ? {} : { spatial: Matrix.make(count, expected.spatialDim!, spatial.data as Float32Array) }),
    ...(radii === undefined ? {} : { radii: radii.data as Float32Array }),
    ...(labels === undefined ? {} : { labels: labels.data as Int32Array })
  } satisfies FeatureSet
})
