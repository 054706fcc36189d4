/**
 * The paper path end to end at toy sizes: a tiny class-per-folder image set,
 * a random-weight SD-VAE (4 levels of 32 channels, diffusers' keys), a
 * random-weight FID Inception at 1/16 width on 75 × 75 inputs, a 28-block
 * DiT of width 32 on the VAE's 4 × 4 × 4 latents, and an ADM-style
 * reference batch, all written as the files researchers download would be;
 * then Table 4's grid runs through the suite on them.
 */
import { NodeServices } from "@effect/platform-node"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Dataset, Inception, Npz, Png, Stages } from "@tinyfusion/data"
import { Reference } from "@tinyfusion/eval"
import { StateDict, Config, Fixtures, Init, SdVae } from "@tinyfusion/models"
import { Compute, Safetensors } from "@tinyfusion/tensor"
import * as Presets from "./presets.ts"
import * as Suite from "./runner.ts"

const side = 32
const vae: SdVae.Config = Fixtures.sdVae
const inception: Inception.Config = { divisor: 16, classes: 1008, inputSize: 75 }
const sizes: Presets.PaperSizes = { imageSize: side, inception, vaeEvalImages: 4 }

const write = (file: string, bytes: Uint8Array) => (fs.writeFileSync(file, bytes), file)

/** A picture of class c: a colour gradient whose hue the class sets. */
const picture = (c: number, i: number) =>
  Uint8Array.from({ length: side * side * 3 }, (_, k) => ((k % 3 === c % 3 ? 200 : 40) + ((k / 3) % side) * 2 + i * 7) % 256)

const makeFiles = (root: string) => {
  for (const [split, count] of [["train", 10], ["val", 4]] as const) {
    for (const c of [0, 1]) {
      const dir = path.join(root, "data", split, `class${c}`)
      fs.mkdirSync(dir, { recursive: true })
      for (let i = 0; i < count; i++) write(path.join(dir, `${i}.png`), Png.encode(Png.raster(side, side, 3, picture(c, i))))
    }
  }
  const teacher: Config.Config = { ...Config.presets.mini, hiddenSize: 32, numHeads: 2, inputSize: 4, numClasses: 2 }
  const images = Uint8Array.from([0, 1, 2].flatMap((i) => [0, 1].flatMap((c) => [...picture(c, i + 10)])))
  return {
    teacher: write(path.join(root, "DiT-toy.safetensors"), Effect.runSync(StateDict.encode(teacher, Init.host(teacher, 0)))),
    vae: write(path.join(root, "diffusion_pytorch_model.safetensors"), Safetensors.encode(Fixtures.publishedWeights(SdVae.referenceShapes(vae)))),
    inception: write(path.join(root, "pt_inception-toy.safetensors"), Safetensors.encode(Fixtures.publishedWeights(Inception.referenceShapes(inception)))),
    images
  }
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), "paper-path-"))
afterAll(() => fs.rmSync(root, { recursive: true, force: true }))
const files = makeFiles(root)

describe("the paper path at toy sizes", () => {
  it.effect("checks every file up front, one line per problem, then runs Table 4 on SD-VAE latents, Inception features and the reference batch", () =>
    Effect.gen(function*() {
      const reference = path.join(root, "VIRTUAL_toy.npz")
      yield* Npz.write(reference, [{ name: "arr_0", dtype: "uint8", shape: [6, side, side, 3], fill: (push) => push(files.images) }])
      const dataset = `images:${path.join(root, "data", "train")}`

      const wrong = yield* Effect.flip(Presets.checkPaperFiles(dataset, { teacher: files.teacher, vae: files.inception, inception: files.vae }, sizes))
      assert.match(wrong.message, /^preset paper: 3 problems with its files:/)
      assert.include(wrong.message, "--reference FILE is missing: ADM's reference batch (VIRTUAL_imagenet256_labeled.npz)")
      assert.match(wrong.message, /--vae: .*pt_inception-toy\.safetensors: no VAE keys/)
      assert.match(wrong.message, /--inception: checkpoint does not fit FID Inception-V3 at 1\/16 width: 648 mismatches/)

      const imported = yield* Presets.checkPaperFiles(dataset, { teacher: files.teacher, vae: files.vae, inception: files.inception, reference }, sizes)
      const preset = { ...Presets.quick(dataset), name: "paper" as const }
      const summary = yield* Suite.run({ preset, tables: ["4"], out: path.join(root, "report"), dataset: "toy images", concurrency: 1, imported })
      assert.deepStrictEqual(summary.failures, [])
      // Table 4's 9 cells, and the instrument check's teacher, untrained network (the imported teacher's shape) and unrecovered D14.
      assert.strictEqual(summary.results.size, 12)
      for (const [cell, result] of summary.results) {
        const [run] = result.runs
        assert.isTrue(Number.isFinite(run!.metrics.fid!) && Number.isFinite(run!.metrics.is!), cell)
        // The bootstrap resamples the batch's recomputed features, spatial rows included (sFID's replicates).
        assert.deepStrictEqual([run!.replicates?.fid?.length, run!.replicates?.sfid?.length], [30, 10], cell)
        assert.isDefined(result.speed, cell)
      }
      assert.include(summary.instrument.summary, "The feature network is the FID Inception-V3 (pytorch-fid's weights), published and not trained here")

      const ae = yield* Stage.run(Stages.importedAutoencoder(files.vae), imported.autoencoder.config, {})
      assert.isTrue(ae.cached)
      assert.deepStrictEqual(ae.output.model, { kind: "sd-vae", config: vae, imageSize: side })
      assert.strictEqual(ae.output.scale, 0.18215)
      const featureNet = yield* Stage.run(Stages.importedFeatureNet(files.inception), imported.featureNet.config, {})
      const batch = yield* Stage.run(Reference.fromBatch(reference), imported.reference.config, { featureNet })
      assert.isTrue(batch.cached)
      assert.deepStrictEqual([batch.output.count, batch.output.poolDim, batch.output.spatialDim], [6, 128, 63])
    }).pipe(
      Effect.provide(Layer.mergeAll(
        ArtifactStore.layerTemp,
        Dataset.imageFolder({ root: path.join(root, "data", "train"), test: path.join(root, "data", "val"), size: side }).pipe(Layer.orDie)
      )),
      Effect.provide(Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([])))
    ), 600_000)
})
