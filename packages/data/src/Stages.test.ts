import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute, HostTensor } from "@tinyfusion/tensor"
import { Dataset } from "./Dataset.ts"
import { LatentDataset } from "./LatentDataset.ts"
import * as Png from "./Png.ts"
import * as Stages from "./Stages.ts"
import * as Fixtures from "./fixtures/Tiny.ts"

const autoencoderConfig: Stages.AutoencoderConfig = { ...Fixtures.autoencoder, training: { ...Fixtures.autoencoder.training, steps: 6 }, checkpointEvery: 3, evalImages: 16 }
const featureConfig: Stages.FeatureNetConfig = {
  dataset: "synthetic",
  model: { imageSize: 8, imageChannels: 1, channels: [4, 8], classes: 3, hidden: 8, spatialChannels: 7 },
  training: { seed: 0, steps: 4, batchSize: 8, lr: 1e-3, weightDecay: 0, clip: 1 },
  checkpointEvery: 2
}

const layers = (root: string) =>
  Layer.mergeAll(
    ArtifactStore.layer(root).pipe(Layer.provide(NodeServices.layer)),
    Dataset.synthetic({ classes: 3, train: 24, test: 16, size: 8, channels: 1, seed: 2 }),
    Logger.layer([])
  )

describe("Stages", () => {
  it.effect("autoencoder → latents → LatentDataset; feature-net; reruns are cache hits", () =>
    Effect.gen(function*() {
      const root = fs.mkdtempSync(path.join(os.tmpdir(), "data-stages-"))
      yield* Effect.gen(function*() {
        const ae = yield* Stage.run(Stages.AutoencoderStage, autoencoderConfig, {})
        assert.isTrue(Number.isFinite(ae.output.psnr) && ae.output.psnr > 0)
        assert.isTrue(ae.output.scale > 0)
        assert.deepStrictEqual([ae.output.psnrImages, ae.output.psnrCrop], [16, 8])
        // 16 test images: two rows of originals, each over its reconstructions, 8 tiles of 8×8 with 2-pixel gaps.
        const picture = yield* Png.decode(fs.readFileSync(ae.path("reconstructions.png")), "reconstructions.png")
        assert.deepStrictEqual([picture.width, picture.height], [8 * 8 + 9 * 2, 4 * 8 + 5 * 2])
        const params = (yield* ae.tensors("params.safetensors")) as Record<string, Record<string, Record<string, HostTensor.HostTensor>>>
        assert.deepStrictEqual(params["encoder"]!["conv_in"]!["weight"]!.shape, [4, 1, 3, 3])

        const latents = yield* Stage.run(Stages.LatentsStage, { dataset: "synthetic", seed: 0, shardSize: 10, batchSize: 8 }, { autoencoder: ae })
        assert.deepStrictEqual([latents.output.count, latents.output.shards, ...latents.output.latentShape], [24, 3, 4, 4, 2])
        // The shard checkpoints give way to the artifact.
        assert.isFalse(fs.existsSync(path.join(root, "checkpoints", latents.key)))
        const data = yield* Effect.provide(Effect.gen(function*() {
          return yield* LatentDataset
        }), Stages.latentDataset(latents))
        assert.deepStrictEqual([data.count, data.scale], [24, ae.output.scale])

        const again = yield* Stage.run(Stages.LatentsStage, { dataset: "synthetic", seed: 0, shardSize: 10, batchSize: 8 }, { autoencoder: ae })
        assert.isTrue(again.cached)

        const net = yield* Stage.run(Stages.FeatureNetStage, featureConfig, {})
        assert.deepStrictEqual([net.output.testImages, net.output.poolDim, net.output.spatialDim], [16, 8, 4 * 4 * 7])
        assert.isTrue(net.output.accuracy >= 0 && net.output.accuracy <= 1)
        assert.deepStrictEqual(net.manifest.files.map((f) => f.name), ["params.safetensors"])

        const wrong = yield* Effect.flip(Stage.run(Stages.FeatureNetStage, { ...featureConfig, dataset: "fashion-mnist" }, {}))
        assert.match(wrong.message, /the stage config names the dataset fashion-mnist/)
      }).pipe(Effect.provide(layers(root)))
    }).pipe(Effect.provide(Compute.wasm)), 120_000)
})
