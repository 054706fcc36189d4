import { NodeServices } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ArtifactStore, Checkpoint, Manifest, Stage } from "@tinyfusion/core"
import { Dataset, Npz, Png, Stages } from "@tinyfusion/data"
import { Config, Fixtures, MarArtifact, MarStateDict, ModelArtifact } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, Safetensors } from "@tinyfusion/tensor"
import * as Bootstrap from "./Bootstrap.ts"
import * as Evaluation from "./Evaluation.ts"
import * as Tiny from "./fixtures/Tiny.ts"
import * as Features from "./Features.ts"
import * as Metrics from "./Metrics.ts"
import * as Reference from "./Reference.ts"
import * as Sampling from "./Sampling.ts"

const EvaluateTiny = Evaluation.EvaluationStage

const evaluation: Evaluation.EvaluationConfig = {
  samples: 20,
  batchSize: 8,
  sampling: { sampler: "ddpm", steps: "4", cfgScale: 1.5, guidedChannels: "first-3", seed: 7 },
  weights: "ema",
  labels: "random",
  splitSize: 10,
  gridImages: 6,
  // Batches of 8, 8 and 4 samples: part 0 holds the first two, part 1 the last.
  partBatches: 2,
  // 8 groups of the 20 samples (2 or 3 rows) and of the 16 reference images (2 rows).
  bootstrap: { replicates: 20, spatialReplicates: 10, groups: 8, seed: 0 }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), "evaluation-test-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
const logs: Array<string> = []
const layers = Layer.mergeAll(
  ArtifactStore.layer(root).pipe(Layer.provide(NodeServices.layer)),
  Tiny.dataset,
  Logger.layer([Logger.make(({ message }) => void logs.push(String(message)))])
)

// The upstream artifacts: cache hits after the first test that asks.
const upstream = Tiny.upstream

const featureBytes = (artifact: Stage.Artifact<unknown>) =>
  Effect.map(artifact.bytes(Features.file), (bytes) => Manifest.sha256(bytes))

const pooledOf = (artifact: Stage.Artifact<Evaluation.EvaluationOutput>) =>
  Effect.flatMap(artifact.bytes(Features.file), (bytes) =>
    Effect.map(Features.decode(bytes, { count: artifact.output.samples, poolDim: 8, classes: 3 }, { key: artifact.key, path: Features.file }), (set) => set.pooled.data))

describe("Evaluation", () => {
  it.effect("sampleBatch writes samples.npz, ADM's arr_0 of exactly the samples scored (their features match the stored ones)", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model, featureNet } = yield* upstream
      const done = yield* Stage.run(EvaluateTiny, { ...evaluation, sampleBatch: true }, { model, autoencoder, reference })
      assert.include(done.manifest.files.map((f) => f.name), Evaluation.files.sampleBatch)
      const arr = yield* Effect.scoped(Effect.flatMap(Npz.open(done.path(Evaluation.files.sampleBatch)), (npz) => npz.read("arr_0")))
      assert.deepStrictEqual([arr.dtype, arr.shape], ["uint8", [20, 8, 8, 1]])
      const features = yield* Features.ofPixels(arr.data as Uint8Array, 20).pipe(Effect.provide(Stages.featureExtractor(featureNet)))
      assert.deepStrictEqual([...features.pooled.data], [...(yield* pooledOf(done))])
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("the reference images fed through the samples' path score FID 0 against the stored reference", () =>
    Effect.gen(function*() {
      const { featureNet, reference } = yield* upstream
      assert.deepStrictEqual(reference.manifest.files.map((f) => f.name), ["pooled.safetensors", "spatial.safetensors", "features.safetensors"])
      assert.deepStrictEqual(
        [reference.output.count, reference.output.poolDim, reference.output.spatialDim, reference.output.classes, reference.output.k],
        [16, 8, 112, 3, 3]
      )
      const loaded = yield* Reference.load(reference)
      // The test split's pixels, in the reference's batches, as samples would go.
      const data = yield* Dataset
      const samples = yield* Effect.gen(function*() {
        const collector = Metrics.collector({ pooled: 8, spatial: 112, classes: 3 }, "samples")
        for (let start = 0; start < 16; start += 8) yield* collector.add(yield* Features.ofPixels((yield* data.test.read(start, 8)).pixels, 8))
        return yield* collector.result
      }).pipe(Effect.provide(Stages.featureExtractor(featureNet)))
      const results = yield* Metrics.evaluate(samples, loaded.summary, { referenceRadii: loaded.radii, k: loaded.k, splitSize: 8 })
      assert.closeTo(results.fid, 0, 1e-6)
      assert.closeTo(results.sfid, 0, 1e-6)
      assert.deepStrictEqual([results.precision, results.recall], [1, 1])
      assert.strictEqual(results.is, reference.output.is)
      // The stored statistics are the float64 bits of the features' own.
      assert.deepStrictEqual([...loaded.summary.pooled.covariance], [...samples.pooled.covariance])
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("samples a model, scores it with finite metrics and writes the grid and features; a rerun is a cache hit", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model } = yield* upstream
      const inputs = { model, autoencoder, reference }
      const first = yield* Stage.run(EvaluateTiny, evaluation, inputs)
      const out = first.output
      for (const value of [out.fid, out.sfid, out.is]) assert.isTrue(Number.isFinite(value) && value >= 0)
      assert.isAtLeast(out.is, 1)
      assert.isAtMost(out.is, 3)
      for (const share of [out.precision, out.recall]) assert.isTrue(share >= 0 && share <= 1)
      assert.deepStrictEqual([out.samples, out.family, out.depth, out.weights, out.referenceImages], [20, "dit", 2, "ema", 16])
      assert.strictEqual(out.parameters, model.output.parameters)
      for (const name of ["fid", "sfid", "is", "precision", "recall", "itPerS", "imagesPerS"]) {
        assert.isTrue(Number.isFinite(first.manifest.metrics[name]), name)
      }
      assert.strictEqual(first.manifest.metrics["fid"], out.fid)
      // The bootstrap: replicates stored, their spread in the output.
      const boot = yield* Bootstrap.decode(yield* first.bytes(Evaluation.files.bootstrap))
      assert.deepStrictEqual([boot.fid.length, boot.sfid.length, boot.precision.length], [20, 10, 20])
      assert.deepStrictEqual(out.bootstrap?.groups, { samples: 8, reference: 8 })
      assert.strictEqual(out.bootstrap?.standardErrors.fid, Bootstrap.standardError(boot.fid))
      assert.isAbove(out.bootstrap!.standardErrors.fid!, 0)
      assert.isAbove(out.bootstrap!.standardErrors.sfid!, 0)
      // 6 tiles of 8×8 in 3 columns and 2 rows, 2-pixel gaps.
      const picture = yield* Png.decode(yield* first.bytes(Evaluation.files.grid), Evaluation.files.grid)
      assert.deepStrictEqual([picture.width, picture.height], [3 * 8 + 4 * 2, 2 * 8 + 3 * 2])
      const set = yield* Features.decode(yield* first.bytes(Features.file), { count: 20, poolDim: 8, classes: 3 }, { key: first.key, path: Features.file })
      assert.deepStrictEqual([...set.labels!], [...Sampling.labels(7, 20, 3, "random")])
      for (let r = 0; r < 20; r++) {
        const p = set.probabilities.data.subarray(3 * r, 3 * r + 3)
        assert.closeTo(p[0]! + p[1]! + p[2]!, 1, 1e-5)
      }
      // The parts gave way to the artifact.
      assert.isFalse(fs.existsSync(path.join(root, "checkpoints", first.key)))

      const again = yield* Stage.run(EvaluateTiny, evaluation, inputs)
      assert.isTrue(again.cached)
      assert.deepStrictEqual(again.output, out)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("the same config computed again gives bit-identical sample features, whatever the part size", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model } = yield* upstream
      const inputs = { model, autoencoder, reference }
      const first = yield* Stage.run(EvaluateTiny, evaluation, inputs)
      const store = yield* ArtifactStore
      yield* store.remove(first.dir)
      const recomputed = yield* Stage.run(EvaluateTiny, evaluation, inputs)
      assert.isFalse(recomputed.cached)
      assert.strictEqual(yield* featureBytes(recomputed), yield* featureBytes(first))
      assert.deepStrictEqual(recomputed.output, first.output)
      const oneBatchParts = yield* Stage.run(EvaluateTiny, { ...evaluation, partBatches: 1 }, inputs)
      assert.notStrictEqual(oneBatchParts.key, first.key)
      assert.strictEqual(yield* featureBytes(oneBatchParts), yield* featureBytes(first))
      // Raw weights are another model: other samples.
      const raw = yield* Stage.run(EvaluateTiny, { ...evaluation, weights: "raw" } satisfies Evaluation.EvaluationConfig, inputs)
      assert.strictEqual(raw.output.weights, "raw")
      assert.notStrictEqual(yield* featureBytes(raw), yield* featureBytes(first))
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("a finished part found in the store is used rather than sampled again; one that does not fit is sampled again", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model } = yield* upstream
      const inputs = { model, autoencoder, reference }
      const clean = yield* Stage.run(EvaluateTiny, evaluation, inputs)
      const config = { ...evaluation, splitSize: 5 }
      const { key, code } = yield* Stage.prepare(EvaluateTiny, config, { model: model.key, autoencoder: autoencoder.key, reference: reference.key })
      const parts = yield* Checkpoint.parts({ key, stage: EvaluateTiny.name, code }, Evaluation.partFile)
      // Part 0 (samples 0–15, grid images 0–5) as an earlier run left it, with made-up features;
      // part 1 with the features of 3 samples where 4 belong.
      const dims = { pooled: 8, spatial: 112, classes: 3 }
      const made = (rows: number, images: number): Evaluation.Part => ({
        pooled: new Float32Array(rows * 8).fill(0.5),
        spatial: Rng.normal(Rng.stream(0, "test/spatial"), 0, rows * 112),
        probabilities: new Float32Array(rows * 3).fill(1 / 3),
        images: new Uint8Array(images * 64),
        timing: { batches: Math.ceil(rows / 8), images: rows, ms: 1000 }
      })
      yield* parts.write(0, Evaluation.encodePart(made(16, 6), 16, dims, [8, 8, 1]))
      yield* parts.write(1, Evaluation.encodePart(made(3, 0), 3, dims, [8, 8, 1]))
      logs.length = 0
      const resumed = yield* Stage.run(EvaluateTiny, config, inputs)
      assert.strictEqual(resumed.key, key)
      assert.isTrue(logs.some((line) => /part 0 \(batches 0–1\) kept from an earlier run/.test(line)))
      assert.isTrue(logs.some((line) => /part 1 does not fit \(pooled is \[3,8\], expected \[4,8\]\); sampling it again/.test(line)))
      const pooled = yield* pooledOf(resumed)
      const cleanPooled = yield* pooledOf(clean)
      assert.deepStrictEqual([...pooled.subarray(0, 16 * 8)], new Array(16 * 8).fill(0.5))
      assert.deepStrictEqual([...pooled.subarray(16 * 8)], [...cleanPooled.subarray(16 * 8)])
      // The speed counts every part, the kept one by the time it carries: 3 batches of 4 steps per 20 images.
      const { itPerS, imagesPerS } = resumed.manifest.metrics
      assert.closeTo(itPerS! / imagesPerS!, (3 * 4) / 20, 1e-9)

      // Killed after its last part: the rerun samples nothing and records the speed the parts carry.
      const done = { ...evaluation, splitSize: 4 }
      const doneRun = yield* Stage.prepare(EvaluateTiny, done, { model: model.key, autoencoder: autoencoder.key, reference: reference.key })
      const doneParts = yield* Checkpoint.parts({ key: doneRun.key, stage: EvaluateTiny.name, code: doneRun.code }, Evaluation.partFile)
      yield* doneParts.write(0, Evaluation.encodePart(made(16, 6), 16, dims, [8, 8, 1]))
      yield* doneParts.write(1, Evaluation.encodePart({ ...made(4, 0), timing: { batches: 1, images: 4, ms: 250 } }, 4, dims, [8, 8, 1]))
      const finished = yield* Stage.run(EvaluateTiny, done, inputs)
      assert.closeTo(finished.manifest.metrics["itPerS"]!, (3 * 4 * 1000) / 1250, 1e-9)
      assert.closeTo(finished.manifest.metrics["imagesPerS"]!, (20 * 1000) / 1250, 1e-9)
      // A part from before parts carried their time is sampled again.
      const old = { ...evaluation, splitSize: 2 }
      const oldRun = yield* Stage.prepare(EvaluateTiny, old, { model: model.key, autoencoder: autoencoder.key, reference: reference.key })
      const oldParts = yield* Checkpoint.parts({ key: oldRun.key, stage: EvaluateTiny.name, code: oldRun.code }, Evaluation.partFile)
      const timed = yield* Safetensors.decode(Evaluation.encodePart(made(16, 6), 16, dims, [8, 8, 1]))
      yield* oldParts.write(0, Safetensors.encode(timed.tensors, { metadata: { format: "tinyfusion/evaluation-part" } }))
      logs.length = 0
      yield* Stage.run(EvaluateTiny, old, inputs)
      assert.isTrue(logs.some((line) => /part 0 does not fit \(no sampling time\); sampling it again/.test(line)))
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("a model with non-finite weights, or whose samples are not finite, is refused", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model } = yield* upstream
      const Broken = Stage.make({
        name: "broken-model",
        module: import.meta.url,
        config: Schema.Struct({ poison: Schema.Literals(["nan", "huge"]) }),
        output: ModelArtifact.Model,
        run: (config, _inputs, ctx) =>
          Effect.gen(function*() {
            const read = yield* ModelArtifact.read(model, { ema: true })
            const params = ParamTree.map(read.params, HostTensor.isHostTensor, (t) =>
              HostTensor.float32(t.shape, Float32Array.from(t.data, (v) => (config.poison === "nan" ? Number.NaN : v * 1e30))))
            return yield* ModelArtifact.write(ctx, { family: read.family, config: read.config, params })
          })
      })
      const EvaluateBroken = Evaluation.EvaluationStage
      for (const [poison, message] of [
        ["nan", /^the raw weights of broken-model-\w+: 1[\d]+ of 1[\d]+ values are not finite \(the first in pos_embed\); no metric of them means anything$/],
        ["huge", /^the decoded samples of batch 0: \d+ of 512 values are not finite \(the first in samples\)/]
      ] as const) {
        const broken = yield* Stage.run(Broken, { poison }, {})
        const refused = yield* Effect.flip(Stage.run(EvaluateBroken, evaluation, { model: broken, autoencoder, reference }))
        assert.strictEqual(refused._tag, "NonFiniteValues", poison)
        assert.match(refused.message, message, poison)
      }
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("a sampler of the other family, guidance without a null class and bad configs are typed errors", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model } = yield* upstream
      const inputs = { model, autoencoder, reference }
      const withSampling = (sampling: Partial<Sampling.Options>): Evaluation.EvaluationConfig => ({ ...evaluation, sampling: { ...evaluation.sampling, ...sampling } })
      const ode = yield* Effect.flip(Stage.run(EvaluateTiny, withSampling({ sampler: "ode", steps: "5" }), inputs))
      assert.strictEqual(ode._tag, "IncompatibleModel")
      assert.match(ode.message, /the ode sampler is for SiT \(ode, sde\) models/)
      const config = (sampling: Record<string, unknown>) => Stage.decodeConfig(EvaluateTiny, { ...evaluation, sampling: { ...evaluation.sampling, ...sampling } })
      assert.match((yield* Effect.flip(config({ sampler: "sde", steps: "250x" }))).message, /steps "250x" must be an integer ≥ 2/)
      assert.match((yield* Effect.flip(config({ steps: "ddim999" }))).message, /cannot create exactly 999 steps/)
      const twoChannels = { ...(yield* Config.make("mini")), inChannels: 2 }
      assert.match((yield* Effect.flip(Sampling.check({ family: "dit", config: twoChannels }, evaluation.sampling))).message, /first 3 channels needs at least 3 latent channels, the model has 2/)
      yield* Sampling.check({ family: "dit", config: twoChannels }, { ...evaluation.sampling, guidedChannels: "all" })
      assert.match((yield* Effect.flip(config({ cfgScale: 0.5 }))).message, /cfgScale/)
      // An autoencoder of 2-channel latents for a model of 4-channel ones.
      const narrow = yield* Stage.run(Stages.AutoencoderStage, { ...Tiny.autoencoderConfig, model: { ...Tiny.autoencoderConfig.model, latentChannels: 2 } }, {})
      const mismatch = yield* Effect.flip(Stage.run(EvaluateTiny, evaluation, { ...inputs, autoencoder: narrow }))
      assert.match(mismatch.message, /the model takes 4×4×4 latents, the autoencoder \(autoencoder-[0-9a-f]+\) makes 4×4×2/)
      // A reference of 16×16 images for a feature network of 8×8 ones (another batch size: the key names
      // the dataset, not its image size, so the 8×8 reference would be a cache hit).
      const featureNet = yield* Stage.run(Stages.FeatureNetStage, Tiny.featureNetConfig, {})
      const larger = yield* Effect.flip(
        Stage.run(Reference.ReferenceStage, { ...Tiny.referenceConfig, batchSize: Tiny.referenceConfig.batchSize + 1 }, { featureNet }).pipe(
          Effect.provide(Dataset.synthetic({ classes: 3, train: 4, test: 4, size: 16, channels: 1, seed: 0 }))
        )
      )
      assert.match(larger.message, /the synthetic images are 16×16×1, the feature network takes 8×8×1/)
      const check = Sampling.check({ family: "dit", config: { ...(yield* Config.make("mini")), classDropoutProb: 0 } }, evaluation.sampling)
      assert.match((yield* Effect.flip(check)).message, /guidance \(scale 1.5\) needs the null class/)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)

  it.effect("a SiT samples with the ODE and SDE samplers", () =>
    Effect.gen(function*() {
      const { autoencoder, reference } = yield* upstream
      const model = yield* Stage.run(Tiny.ModelStage, Tiny.modelConfig(1, "sit"), {})
      for (const sampler of ["ode", "sde"] as const) {
        const config: Evaluation.EvaluationConfig = { ...evaluation, samples: 8, gridImages: 0, sampling: { ...evaluation.sampling, sampler, steps: "3" } }
        const out = yield* Stage.run(EvaluateTiny, config, { model, autoencoder, reference })
        assert.strictEqual(out.output.family, "sit")
        assert.isTrue(Number.isFinite(out.output.fid))
        assert.isFalse(out.manifest.files.some((f) => f.name === Evaluation.files.grid))
      }
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)
})

/** A tiny MAR on the 4×4×4 latents: the parity fixture's shape, every weight N(0, 0.1²). */
const MarModel = Stage.make({
  name: "tiny-mar",
  module: import.meta.url,
  config: Schema.Struct({ seed: Schema.Int }),
  output: MarArtifact.Model,
  run: (c, _inputs, ctx) => {
    const config = { ...Fixtures.mar, inChannels: 4, numSamplingSteps: "4" }
    const params = ParamTree.unflatten(MarStateDict.referenceShapes(config).map(([key, shape]) =>
      [key, HostTensor.float32(shape, Rng.normal(Rng.stream(c.seed, key), 0, HostTensor.numel(shape)).map((v) => v * 0.1))] as const
    ))
    return MarArtifact.write(ctx, { config, params })
  }
})

describe("Evaluation of a MAR", () => {
  it.effect("samples by iterative unmasking and scores finite metrics; MAR options are required for a MAR and refused for a DiT", () =>
    Effect.gen(function*() {
      const { autoencoder, reference, model } = yield* upstream
      const mar = yield* Stage.run(MarModel, { seed: 3 }, {})
      const stage = Evaluation.EvaluationStage
      const config: Evaluation.EvaluationConfig = {
        ...evaluation,
        samples: 8,
        mar: { iterations: 4, cfgScale: 2, cfgSchedule: "linear", temperature: 1, seed: 0 }
      }
      const out = yield* Stage.run(stage, config, { model: mar, autoencoder, reference })
      assert.deepStrictEqual([out.output.family, out.output.depth, out.output.weights], ["mar", 4, "raw"])
      for (const v of [out.output.fid, out.output.sfid, out.output.is]) assert.isTrue(Number.isFinite(v))
      // 4 steps, each a network forward and 4 head steps.
      assert.isAbove(out.manifest.metrics["itPerS"] as number, 0)
      const missing = yield* Effect.flip(Stage.run(stage, evaluation, { model: mar, autoencoder, reference }))
      assert.match(missing.message, /the model is a MAR: the config needs `mar` sampling options/)
      const refused = yield* Effect.flip(Stage.run(EvaluateTiny, config, { model, autoencoder, reference }))
      assert.match(refused.message, /MAR sampling options given for a dit/)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 120_000)
})
