import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Dataset, Fixtures as DataFixtures, Png, Stages } from "@tinyfusion/data"
import { type Config, Fixtures, ModelArtifact } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Pretrain from "./Pretrain.ts"
import * as Trainer from "./Trainer.ts"

/** 8×8 synthetic images → 4×4×2 latents. */
const autoencoder: Stages.AutoencoderConfig = DataFixtures.autoencoder

const model: Config.Config = { ...Fixtures.tiny, hiddenSize: 16, depth: 2 }

const config: Pretrain.PretrainConfig = {
  family: "dit",
  model,
  training: { steps: 12, batchSize: 8, seed: 0, lr: 1e-3, weightDecay: 0, emaDecay: 0.9, checkpointEvery: 5, curveEvery: 4, nonFinite: "skip" }
}

const layers = Layer.mergeAll(
  ArtifactStore.layerTemp,
  Dataset.synthetic({ classes: 3, train: 24, test: 8, size: 8, channels: 1, seed: 2 }),
  Logger.layer([])
).pipe(Layer.provideMerge(NodeServices.layer))

describe("pretrain stage", () => {
  it.effect("trains on a latents artifact; writes the model (raw + EMA), the curve as data and as a plot; reruns are cache hits", () =>
    Effect.gen(function*() {
      const ae = yield* Stage.run(Stages.AutoencoderStage, autoencoder, {})
      const latents = yield* Stage.run(Stages.LatentsStage, { dataset: "synthetic", seed: 0, shardSize: 24, batchSize: 8 }, { autoencoder: ae })
      const trained = yield* Stage.run(Pretrain.PretrainStage, config, { latents })
      const out = trained.output
      assert.deepStrictEqual([out.family, out.config, out.steps, out.skipped], ["dit", model, 12, []])
      assert.isTrue(Number.isFinite(out.finalLoss))
      assert.isAbove(trained.manifest.metrics["samplesPerSecond"]!, 0)
      assert.strictEqual(trained.manifest.metrics["resumedFrom"], 0)

      const curve = yield* Trainer.readCurve(trained)
      assert.deepStrictEqual(curve.map((p) => p.step), [0, 4, 8, 11])
      assert.strictEqual(curve.at(-1)!.loss, out.finalLoss)
      const plot = yield* Png.decode(yield* trained.bytes(Trainer.files.plot), Trainer.files.plot)
      assert.isAbove(plot.width, 100)

      // The EMA (decay 0.9 over 12 steps) is its own set of weights, and the parameter count is the tree's.
      const raw = yield* ModelArtifact.read(trained, { ema: false })
      const ema = yield* ModelArtifact.read(trained, { ema: true })
      const flat = (tree: HostTensor.HostTree) => new Map(ParamTree.flatten(tree, HostTensor.isHostTensor))
      const [r, e] = [flat(raw.params), flat(ema.params)]
      assert.strictEqual(out.parameters, [...r.values()].reduce((n, t) => n + t.data.length, 0))
      assert.isFalse(HostTensor.bitEqual(r.get("blocks.0.attn.qkv.weight")!, e.get("blocks.0.attn.qkv.weight")!))
      assert.isTrue(HostTensor.bitEqual(r.get("pos_embed")!, e.get("pos_embed")!))

      assert.isTrue((yield* Stage.run(Pretrain.PretrainStage, config, { latents })).cached)

      // A rate that blows the weights up, under policy fail: a typed error naming the step.
      const blown = yield* Effect.flip(Stage.run(Pretrain.PretrainStage, {
        ...config,
        training: { ...config.training, lr: 1e30, nonFinite: "fail" as const }
      }, { latents }))
      assert.strictEqual(blown._tag, "Diverged")
      assert.match(blown.message, /stage pretrain diverged: loss (NaN|-?Infinity) at step [1-9]\d*/)

      const wrong = yield* Effect.flip(Stage.run(Pretrain.PretrainStage, { ...config, model: { ...model, inputSize: 8 } }, { latents }))
      assert.strictEqual(wrong._tag, "DataMismatch")
      assert.match(wrong.message, /latents of 4×4×2 in 3 classes do not fit a model of 8×8×2 latents and 3 classes/)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 60_000)
})
