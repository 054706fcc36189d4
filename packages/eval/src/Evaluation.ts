/**
 * The evaluation stage (`evaluation`): N samples of a model, decoded by the
 * autoencoder, quantised to 8 bits as ADM's evaluator receives them, and
 * scored against a reference with ADM's five numbers.
 *
 *   inputs   model        any model artifact of any family (the Models.Any port)
 *            autoencoder  the `autoencoder` artifact of the model's latents
 *            reference    a `reference` artifact; its feature network (an
 *                         input of it) is opened by key
 *   files    samples.png            a grid of the first `gridImages` samples
 *            samples.npz            with `sampleBatch`: every sample as an ADM sample batch
 *            pooled.safetensors     the samples' float64 statistics (FID)
 *            spatial.safetensors    the same of spatial features (sFID)
 *            features.safetensors   pooled features, class probabilities and
 *                                   the label of every sample
 *            bootstrap.safetensors  the bootstrap replicates of the five
 *                                   numbers (Bootstrap), whose spread the
 *                                   output states as standard errors
 *   metrics  fid, sfid, is, precision, recall (the output's names); and the
 *            speed of the sampling, decoding included, timed as each part
 *            was made: itPerS (network evaluations of a batch per second,
 *            guidance doubling included) and imagesPerS
 *
 * Weights or samples that are not finite numbers are an error
 * (NonFiniteValues): no metric of them means anything.
 *
 * Resumable: samples are made in parts of `partBatches` batches, and each
 * part's features (with its grid images and its sampling time) are committed
 * as a checkpoint as soon as it is done (Checkpoint.parts). A rerun after a kill reads the
 * finished parts and samples only the rest. Every batch is a pure function
 * of (config, batch index) and the collector is fed batch by batch from the
 * parts, in order, whether read or just computed, so a resumed evaluation
 * ends with the same bits as an uninterrupted one. The collector's float64
 * state is not stored: replaying the parts rebuilds it exactly.
 */
import { Effect, Schema, Struct } from "effect"
import { Checkpoint, Progress, Stage } from "@tinyfusion/core"
import { Codec, FeatureExtractor, Images, Npz, Png, Stages } from "@tinyfusion/data"
import { ModelArtifact, Models } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Safetensors, tf } from "@tinyfusion/tensor"
import * as Bootstrap from "./Bootstrap.ts"
import * as FeatureStatistics from "./FeatureStatistics.ts"
import * as Features from "./Features.ts"
import * as MarSampling from "./MarSampling.ts"
import * as Matrix from "./Matrix.ts"
import * as Metrics from "./Metrics.ts"
import * as Reference from "./Reference.ts"
import * as Sampling from "./Sampling.ts"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

export const EvaluationConfig = Schema.Struct({
  /** Samples N (paper: 50,000; Table 4: 10,000). */
  samples: PositiveInt,
  /** Samples per sampling batch (the network sees twice as many under guidance). */
  batchSize: PositiveInt,
  sampling: Sampling.Options,
  /** The EMA weights (the paper samples them) or the raw ones; a model without EMA weights uses its raw ones. */
  weights: Schema.Literals(["ema", "raw"]),
  /** Labels drawn uniformly (DiT's sample_ddp.py) or classes in turn. */
  labels: Schema.Literals(["random", "balanced"]),
  /** Rows per Inception Score split (ADM: 5,000). */
  splitSize: PositiveInt,
  /** Samples shown in samples.png. */
  gridImages: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** Batches per checkpointed part. */
  partBatches: PositiveInt,
  /** The uncertainty of the five numbers: resampling samples and reference (Bootstrap). */
  bootstrap: Bootstrap.Settings,
  /** How a MAR samples: required for a MAR model, refused for a DiT or SiT (whose sampler is `sampling`). */
  mar: Schema.optional(MarSampling.Options),
  /**
   * Also write samples.npz: every sample as ADM's evaluator reads a sample
   * batch (arr_0, N × H × W × C uint8), for the official evaluator.py.
   */
  sampleBatch: Schema.optionalKey(Schema.Boolean)
})
export type EvaluationConfig = typeof EvaluationConfig.Type

export const EvaluationOutput = Schema.Struct({
  samples: Schema.Int,
  ...Metrics.Scores.fields,
  family: Schema.Literals([...ModelArtifact.Family.literals, "mar"]),
  depth: Schema.Int,
  parameters: Schema.Int,
  /** The weights sampled. */
  weights: Schema.Literals(["ema", "raw"]),
  referenceImages: Schema.Int,
  /** The bootstrap run (null: none): its replicates, the groups each set was cut into, each number's standard error. */
  bootstrap: Schema.NullOr(Schema.Struct({
    replicates: Schema.Int,
    spatialReplicates: Schema.Int,
    groups: Schema.Struct({ samples: Schema.Int, reference: Schema.Int }),
    /** Under the scores' names (Metrics.Scores); null where fewer than two replicates were drawn. */
    standardErrors: Metrics.Scores.mapFields(Struct.map(Schema.NullOr))
  }))
})
export type EvaluationOutput = typeof EvaluationOutput.Type

/** The paper's protocol at the mini preset's sizes: 250 DDPM steps, guidance 1.5 on the first 3 channels, EMA weights. */
export const miniEvaluation: EvaluationConfig = {
  samples: 10_000,
  batchSize: 64,
  sampling: { sampler: "ddpm", steps: "250", cfgScale: 1.5, guidedChannels: "first-3", seed: 0 },
  weights: "ema",
  labels: "random",
  splitSize: 5000,
  gridImages: 64,
  partBatches: 10,
  // sFID's replicates cost an eigendecomposition at 448 dimensions each (~0.4 s on one core).
  bootstrap: { replicates: 200, spatialReplicates: 50, groups: 50, seed: 0 }
}

export const files = {
  grid: "samples.png",
  sampleBatch: "samples.npz",
  pooled: "pooled.safetensors",
  spatial: "spatial.safetensors",
  features: Features.file,
  bootstrap: Bootstrap.file
} as const

/** Inputs that do not fit together (the model's latents and the autoencoder's, a model that is not one). */
export class IncompatibleInputs extends Schema.TaggedError<IncompatibleInputs>()("IncompatibleInputs", {
  reason: Schema.String
}) {
  override get message(): string {
    return `evaluation inputs do not fit: ${this.reason}`
  }
}

/** Weights or samples that are not finite numbers. */
export class NonFiniteValues extends Schema.TaggedError<NonFiniteValues>()("NonFiniteValues", {
  what: Schema.String,
  count: Schema.Int,
  total: Schema.Int,
  first: Schema.String
}) {
  override get message(): string {
    return `${this.what}: ${this.count} of ${this.total} values are not finite (the first in ${this.first}); no metric of them means anything`
  }
}

/** Fails when any of the named arrays holds a NaN or an infinity. */
export const checkFinite = (what: string, arrays: ReadonlyArray<readonly [string, ArrayLike<number>]>) =>
  Effect.suspend(() => {
    let count = 0
    let total = 0
    let first: string | undefined
    for (const [name, data] of arrays) {
      total += data.length
      for (let i = 0; i < data.length; i++) {
        if (!Number.isFinite(data[i]!)) {
          count++
          first ??= name
        }
      }
    }
    return first === undefined ? Effect.void : Effect.fail(new NonFiniteValues({ what, count, total, first }))
  })

/** Fails when any weight of the tree is not finite, naming the first key that holds one. */
export const checkWeights = (what: string, params: HostTensor.HostTree) =>
  checkFinite(what, ParamTree.flatten(params, HostTensor.isHostTensor).map(([key, t]) => [key, t.data] as const))

/** One checkpointed part: the features of its samples, the grid images among them (8-bit values), how long sampling it took. */
export interface Part {
  readonly pooled: Float32Array
  readonly spatial: Float32Array
  readonly probabilities: Float32Array
  readonly images: Uint8Array
  readonly timing: Timing
  /** Every sample's 8-bit pixels (when the config asks for a sample batch). */
  readonly samples?: Uint8Array
}

/** Sampling time of a part, decoding included: batches, images, milliseconds. */
export interface Timing {
  readonly batches: number
  readonly images: number
  readonly ms: number
}

/** The file of part `index` in its checkpoint. */
export const partFile = (index: number) => `part-${index}.safetensors`

/** The checkpoint format of a part. */
export const encodePart = (part: Part, rows: number, dims: Metrics.Dimensions, imageShape: readonly [number, number, number]) => {
  const per = imageShape[0] * imageShape[1] * imageShape[2]
  return Safetensors.encode(
    [
      ["pooled", HostTensor.float32([rows, dims.pooled], part.pooled)],
      ["spatial", HostTensor.float32([rows, dims.spatial], part.spatial)],
      ["probabilities", HostTensor.float32([rows, dims.classes], part.probabilities)],
      ["images", HostTensor.float32([part.images.length / per, ...imageShape], Float32Array.from(part.images))],
      // Bytes packed four to an int32 (safetensors as written here has no uint8).
      ...(part.samples === undefined ? [] : [["samples", HostTensor.int32([Math.ceil(part.samples.length / 4)], packed(part.samples))] as const])
    ],
    { metadata: { format: "tinyfusion/evaluation-part", timing: JSON.stringify(part.timing) } }
  )
}

const decodeTiming = Schema.decodeUnknownOption(Schema.fromJsonString(Schema.Struct({
  batches: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  images: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  ms: Schema.Finite.check(Schema.isGreaterThan(0))
})))

const packed = (bytes: Uint8Array): Int32Array => {
  const out = new Uint8Array(Math.ceil(bytes.length / 4) * 4)
  out.set(bytes)
  return new Int32Array(out.buffer)
}

/** A stored part, or the reason it does not fit what this part must hold. */
const decodePart = (
  bytes: Uint8Array,
  rows: number,
  gridRows: number,
  dims: Metrics.Dimensions,
  imageShape: readonly [number, number, number],
  sampleBatch: boolean
) =>
  Effect.gen(function*() {
    const file = yield* Effect.result(Safetensors.decode(bytes))
    if (file._tag === "Failure") return file.failure.reason
    const expected: ReadonlyArray<readonly [string, ReadonlyArray<number>]> = [
      ["pooled", [rows, dims.pooled]],
      ["spatial", [rows, dims.spatial]],
      ["probabilities", [rows, dims.classes]],
      ["images", [gridRows, ...imageShape]]
    ]
    for (const [name, shape] of expected) {
      const t = file.success.tensors.get(name)
      if (t === undefined) return `no tensor ${name}`
      if (t.shape.length !== shape.length || t.shape.some((n, i) => n !== shape[i])) return `${name} is [${t.shape}], expected [${shape}]`
    }
    const timing = decodeTiming(file.success.metadata["timing"])
    if (timing._tag === "None") return "no sampling time"
    const data = (name: string) => file.success.tensors.get(name)!.data as Float32Array
    const sampleBytes = rows * imageShape[0] * imageShape[1] * imageShape[2]
    const samples = file.success.tensors.get("samples")
    if (sampleBatch && (samples === undefined || samples.data.length !== Math.ceil(sampleBytes / 4))) return "no samples of all its rows"
    return {
      pooled: data("pooled"),
      spatial: data("spatial"),
      probabilities: data("probabilities"),
      images: Uint8Array.from(data("images")),
      timing: timing.value,
      ...(sampleBatch ? { samples: new Uint8Array(samples!.data.buffer, samples!.data.byteOffset, sampleBytes) } : {})
    } satisfies Part
  })

const concatBytes = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0)
  return out
}

const concat = (parts: ReadonlyArray<Float32Array>): Float32Array => {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

/** The grid of samples.png: square-ish, 8-bit grey or RGB tiles. */
const grid = (images: Uint8Array, count: number, shape: readonly [number, number, number]) => {
  const [h, w, c] = shape
  const per = h * w * c
  const tiles = Array.from({ length: count }, (_, i) => {
    const tile = images.subarray(i * per, (i + 1) * per)
    // Png rasters are grey or RGB: other channel counts show their first channel.
    if (c === 1 || c === 3) return Png.raster(w, h, c, tile)
    return Png.raster(w, h, 1, Uint8Array.from({ length: h * w }, (_, p) => tile[p * c]!))
  })
  return Png.encode(Png.grid(tiles, Math.ceil(Math.sqrt(count)), { gap: 2, background: 128 }))
}

interface Inputs {
  readonly model: Stage.Artifact<Models.Any>
  readonly autoencoder: Stage.Artifact<typeof Stages.AutoencoderOutput.Type>
  readonly reference: Stage.Artifact<Reference.ReferenceOutput>
}

/** What the evaluation samples: a DiT or SiT with its sampler, or a MAR with its own. */
interface Generator {
  readonly family: EvaluationOutput["family"]
  readonly depth: number
  readonly parameters: number
  /** Whether the weights sampled are the EMA. */
  readonly ema: boolean
  readonly config: { readonly inputSize: number; readonly inChannels: number; readonly numClasses: number }
  /** Batched network evaluations per image (the it/s metric counts them). */
  readonly evaluations: number
  /** Latents of batch `batch` for its labels. */
  readonly sample: (batch: number, labels: ReadonlyArray<number>) => tf.Tensor4D
}

/** The generator of the input model, its weights on the device for the scope. */
const generatorOf = (config: EvaluationConfig, modelArtifact: Stage.Artifact<Models.Any>) =>
  Effect.gen(function*() {
    const upload = (host: HostTensor.HostTree) =>
      Effect.acquireRelease(Effect.sync(() => HostTensor.treeToTensors(host)), (p) => Effect.sync(() => ParamTree.dispose(p)))
    const loaded = yield* Models.read(modelArtifact, { ema: config.weights === "ema" })
    // Warns when the EMA was asked for and is missing; fails on weights that are not all finite.
    if (config.weights === "ema" && !loaded.ema) yield* Effect.logWarning("the model artifact holds no EMA weights: sampling its raw weights")
    yield* checkWeights(`the ${loaded.ema ? "EMA" : "raw"} weights of ${modelArtifact.key}`, loaded.params)
    const common = { family: loaded.family, depth: Models.depth(loaded), parameters: modelArtifact.output.parameters, ema: loaded.ema, config: loaded.config }
    if (loaded.family === "mar") {
      if (config.mar === undefined) return yield* new IncompatibleInputs({ reason: "the model is a MAR: the config needs `mar` sampling options" })
      const mar = config.mar
      const sampler = yield* MarSampling.make(loaded.config, mar)
      const params = yield* upload(loaded.params)
      const generator: Generator = {
        ...common,
        evaluations: MarSampling.evaluations(mar, sampler.diffloss.generate.numTimesteps),
        sample: (batch, labels) => sampler.sample({ config: loaded.config, params }, batch, labels)
      }
      return generator
    }
    if (config.mar !== undefined) return yield* new IncompatibleInputs({ reason: `MAR sampling options given for a ${loaded.family}` })
    yield* Sampling.check(loaded, config.sampling)
    const sampler = yield* Sampling.make(config.sampling)
    const params = yield* upload(loaded.params)
    const network: Sampling.Model = { family: loaded.family, config: loaded.config, params }
    const generator: Generator = {
      ...common,
      evaluations: Sampling.evaluations(config.sampling),
      sample: (batch, labels) => sampler.sample(network, batch, labels)
    }
    return generator
  })

const evaluate = (config: EvaluationConfig, inputs: Inputs, ctx: Stage.Context, featureNet: Stage.Artifact<unknown>) =>
  Effect.gen(function*() {
    const loaded = yield* generatorOf(config, inputs.model)
    const codecShapes = Codec.shapes(inputs.autoencoder.output.model)
    const latent = codecShapes.latentShape
    const { inputSize, inChannels } = loaded.config
    if (latent[0] !== inputSize || latent[1] !== inputSize || latent[2] !== inChannels) {
      return yield* new IncompatibleInputs({
        reason: `the model takes ${inputSize}×${inputSize}×${inChannels} latents, the autoencoder (${inputs.autoencoder.key}) makes ${latent.join("×")}`
      })
    }
    const reference = yield* Reference.load(inputs.reference)
    const labels = Sampling.labels(config.sampling.seed, config.samples, loaded.config.numClasses, config.labels)
    const compute = yield* Compute
    const extractor = yield* FeatureExtractor
    const dims = { pooled: extractor.poolDim, spatial: extractor.spatialDim, classes: extractor.classes }
    const imageShape = extractor.imageShape
    const decoded = codecShapes.imageShape
    if (decoded.some((n, i) => n !== imageShape[i])) {
      return yield* new IncompatibleInputs({
        reason: `the autoencoder makes ${decoded.join("×")} images, the feature network takes ${imageShape.join("×")}`
      })
    }
    const perImage = imageShape[0] * imageShape[1] * imageShape[2]
    const ae = yield* Effect.acquireRelease(Stages.loadAutoencoder(inputs.autoencoder), (a) => Effect.sync(() => ParamTree.dispose(a.params)))

    const n = config.samples
    const b = config.batchSize
    const batches = Math.ceil(n / b)
    const partCount = Math.ceil(batches / config.partBatches)
    const gridCount = Math.min(config.gridImages, n)
    const parts = yield* Checkpoint.parts(ctx, partFile)
    const collector = Metrics.collector(dims, "samples", { keepSpatial: config.bootstrap.spatialReplicates > 0 })
    const gridImages = new Uint8Array(gridCount * perImage)
    const evaluations = loaded.evaluations
    const sampled = { batches: 0, images: 0, ms: 0 }
    const progress = yield* Progress.make(ctx.stage, batches)

    /** Samples batch `batch`: 8-bit images, decoded from latents by the autoencoder, and the milliseconds it took. */
    const sampleBatch = (batch: number) =>
      compute.scoped(Effect.gen(function*() {
        const start = performance.now()
        const batchLabels = Array.from(labels.subarray(batch * b, Math.min(n, (batch + 1) * b)))
        const latents = loaded.sample(batch, batchLabels)
        const pixels = yield* compute.read(ae.codec.decode(tf.div(latents, ae.scale) as tf.Tensor4D))
        const ms = performance.now() - start
        yield* checkFinite(`the decoded samples of batch ${batch}`, [["samples", pixels]])
        return { bytes: Images.toBytes(pixels), ms }
      }))

    const computePart = (first: number, end: number) =>
      Effect.gen(function*() {
        const pooled: Array<Float32Array> = []
        const spatial: Array<Float32Array> = []
        const probabilities: Array<Float32Array> = []
        const images: Array<Uint8Array> = []
        const samples: Array<Uint8Array> = []
        let ms = 0
        for (let batch = first; batch < end; batch++) {
          const rows = Math.min(n, (batch + 1) * b) - batch * b
          const { bytes, ms: took } = yield* sampleBatch(batch)
          ms += took
          const f = yield* Features.ofPixels(bytes, rows)
          pooled.push(f.pooled.data as Float32Array)
          spatial.push(f.spatial.data as Float32Array)
          probabilities.push(f.probabilities.data as Float32Array)
          const inGrid = Math.max(0, Math.min(rows, gridCount - batch * b))
          images.push(bytes.subarray(0, inGrid * perImage))
          if (config.sampleBatch === true) samples.push(bytes)
          yield* progress.update(batch + 1)
        }
        return {
          pooled: concat(pooled),
          spatial: concat(spatial),
          probabilities: concat(probabilities),
          images: concatBytes(images),
          timing: { batches: end - first, images: Math.min(n, end * b) - first * b, ms },
          ...(config.sampleBatch === true ? { samples: concatBytes(samples) } : {})
        } satisfies Part
      })

    for (let index = 0; index < partCount; index++) {
      const first = index * config.partBatches
      const end = Math.min(batches, first + config.partBatches)
      const firstSample = first * b
      const rows = Math.min(n, end * b) - firstSample
      const gridRows = Math.max(0, Math.min(rows, gridCount - firstSample))
      const stored = yield* parts.read(index)
      const kept = stored === undefined ? undefined : yield* decodePart(stored, rows, gridRows, dims, imageShape, config.sampleBatch === true)
      if (typeof kept === "string") yield* Effect.logWarning(`part ${index} does not fit (${kept}); sampling it again`)
      let part: Part
      if (kept !== undefined && typeof kept !== "string") {
        yield* Effect.logInfo(`part ${index} (batches ${first}–${end - 1}) kept from an earlier run`)
        yield* progress.update(end)
        part = kept
      } else {
        part = yield* computePart(first, end)
        yield* parts.write(index, encodePart(part, rows, dims, imageShape))
      }
      sampled.batches += part.timing.batches
      sampled.images += part.timing.images
      sampled.ms += part.timing.ms
      for (let batch = first; batch < end; batch++) {
        const from = batch * b - firstSample
        const to = Math.min(n, (batch + 1) * b) - firstSample
        const slice = (data: Float32Array, cols: number) => Matrix.make(to - from, cols, data.subarray(from * cols, to * cols))
        yield* collector.add({
          pooled: slice(part.pooled, dims.pooled),
          spatial: slice(part.spatial, dims.spatial),
          probabilities: slice(part.probabilities, dims.classes)
        })
      }
      if (part.images.length > 0) gridImages.set(part.images, firstSample * perImage)
    }
    yield* progress.finish

    const summary = yield* collector.result
    const boot = config.bootstrap
    const groups = boot.replicates === 0 ? undefined : {
      samples: Bootstrap.groups(n, boot.groups),
      reference: Bootstrap.groups(reference.summary.pooled.count, boot.groups)
    }
    const { results, coverage } = yield* Metrics.score(summary, reference.summary, {
      referenceRadii: reference.radii,
      k: reference.k,
      splitSize: config.splitSize,
      ...(groups === undefined ? {} : { groups })
    })
    const replicates = groups === undefined
      ? undefined
      : yield* Bootstrap.replicates(summary, reference.summary, coverage, boot, { splitSize: config.splitSize })
    if (gridCount > 0) yield* ctx.writeBytes(files.grid, grid(gridImages, gridCount, imageShape))
    if (config.sampleBatch === true) {
      // The parts are read back one at a time: a 50,000-image batch (9.8 GB at 256²) never sits in memory.
      yield* ctx.writeFile(files.sampleBatch, (at) =>
        Npz.write(at, [{
          name: "arr_0",
          dtype: "uint8",
          shape: [n, ...imageShape],
          fill: (push) =>
            Effect.gen(function*() {
              for (let index = 0; index < partCount; index++) {
                const first = index * config.partBatches
                const rows = Math.min(n, Math.min(batches, first + config.partBatches) * b) - first * b
                const gridRows = Math.max(0, Math.min(rows, gridCount - first * b))
                const stored = yield* parts.read(index)
                const part = stored === undefined ? "missing" : yield* decodePart(stored, rows, gridRows, dims, imageShape, true)
                if (typeof part === "string") return yield* Effect.die(new Error(`part ${index} vanished or changed before the sample batch was written (${part})`))
                yield* push(part.samples!)
              }
            })
        }]))
    }
    yield* ctx.writeBytes(files.pooled, FeatureStatistics.encode(summary.pooled))
    yield* ctx.writeBytes(files.spatial, FeatureStatistics.encode(summary.spatial))
    yield* ctx.writeBytes(files.features, Features.encode({ pooled: summary.pooledFeatures, probabilities: summary.probabilities, labels }))
    if (replicates !== undefined) yield* ctx.writeBytes(files.bootstrap, Bootstrap.encode(replicates))
    for (const [name, value] of Object.entries(results)) yield* ctx.metric(name, value)
    // Every part, kept or sampled now, carries its time: a resumed run records what an uninterrupted one does.
    yield* ctx.metric("itPerS", (sampled.batches * evaluations * 1000) / sampled.ms)
    yield* ctx.metric("imagesPerS", (sampled.images * 1000) / sampled.ms)
    yield* Effect.logInfo(`FID ${results.fid.toFixed(3)} against ${featureNet.key}'s features of ${reference.summary.pooled.count} reference images`)
    return {
      samples: n,
      ...results,
      family: loaded.family,
      depth: loaded.depth,
      parameters: loaded.parameters,
      weights: loaded.ema ? "ema" : "raw",
      referenceImages: reference.summary.pooled.count,
      bootstrap: replicates === undefined || groups === undefined ? null : {
        replicates: boot.replicates,
        spatialReplicates: boot.spatialReplicates,
        groups: { samples: groups.samples.length - 1, reference: groups.reference.length - 1 },
        standardErrors: Bootstrap.standardErrors(replicates)
      }
    } satisfies EvaluationOutput
  })

/** The evaluation stage: a model (any model artifact), the autoencoder of its latents, a reference. */
export const EvaluationStage = Stage.make({
  name: "evaluation",
  module: import.meta.url,
  config: EvaluationConfig,
  output: EvaluationOutput,
  inputs: { model: Models.Any, autoencoder: Stages.AutoencoderOutput, reference: Reference.ReferenceOutput },
  run: (config, inputs, ctx) =>
    Effect.gen(function*() {
      // The reference's own feature network, opened by the key its manifest names.
      const opened = yield* Stage.open(inputs.reference.manifest.inputs["featureNet"] ?? "")
      const featureNet = yield* Schema.decodeUnknownEffect(Stages.FeatureNetOutput)(opened.output).pipe(
        Effect.map((output) => ({ ...opened, output })),
        Effect.mapError((e) => new IncompatibleInputs({ reason: `the reference's feature network ${opened.key} does not decode: ${e.message}` }))
      )
      return yield* evaluate(config, inputs, ctx, featureNet).pipe(Effect.scoped, Effect.provide(Stages.featureExtractor(featureNet)))
    })
})
