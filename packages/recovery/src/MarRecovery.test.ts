import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { MarPretrain, Pretrain, Trainer } from "@tinyfusion/diffusion"
import { MarSampling } from "@tinyfusion/eval"
import { Fixtures, MarArtifact, Models } from "@tinyfusion/models"
import { PruneStage } from "@tinyfusion/pruning"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Pipeline from "./fixtures/Pipeline.ts"
import * as Recovery from "./Recovery.ts"
import * as RecoveryStage from "./RecoveryStage.ts"

const layers = Layer.mergeAll(ArtifactStore.layerTemp, Pipeline.dataset, Logger.layer([])).pipe(Layer.provideMerge(NodeServices.layer))

const pretrain: MarPretrain.MarPretrainConfig = {
  model: Fixtures.mar,
  training: { steps: 20, batchSize: 8, seed: 0, lr: 2e-3, weightDecay: 0, maxGradNorm: 3, emaDecay: 0.9, checkpointEvery: 10, curveEvery: 5, nonFinite: "skip" }
}

const training = { ...Recovery.paperTraining(10, 8, 0), lr: 1e-3, lrFloor: 5e-4, emaDecay: 0.9, checkpointEvery: 5, curveEvery: 5 }

/** A MAR's output (these tests' models are MARs). */
const mar = (artifact: Stage.Artifact<unknown>) => Stage.as(Schema.Struct({ ...MarArtifact.Fields, ...Models.BlockFields }), artifact, { stage: "test", input: "model" })

describe("MAR recovery", () => {
  it.effect("pretrain → learnable 1:2 → export → masked KD → sampling: TinyMAR at test size, on the stages a DiT takes; KD terms are 0 for a student equal to its teacher", () =>
    Effect.gen(function*() {
      const ae = yield* Stage.run(Stages.AutoencoderStage, Pipeline.autoencoder, {})
      const data = yield* Stage.run(Stages.LatentsStage, Pipeline.latents, { autoencoder: ae })
      const teacher = yield* Stage.run(MarPretrain.MarPretrainStage, pretrain, { latents: data })
      assert.deepStrictEqual([teacher.output.family, teacher.output.steps, teacher.output.skipped], ["mar", 20, []])
      assert.deepStrictEqual((yield* Trainer.readCurve(teacher)).map((p) => p.step), [0, 5, 10, 15, 19])

      const config = yield* Stage.decodeConfig(PruneStage.PruneStage, {
        method: "learnable",
        scheme: "1:2",
        seed: 0,
        calibration: 8,
        options: { iterations: 3, batchSize: 4, logEvery: 1, checkpointEvery: 0 }
      })
      const pruned = yield* Stage.run(PruneStage.PruneStage, config, { teacher, data })
      const student = yield* mar(yield* Stage.run(PruneStage.ExportStage, {}, { decision: pruned, teacher }))
      assert.deepStrictEqual([student.output.config.encoderDepth, student.output.config.decoderDepth], [1, 1])
      const recover = (strategy: string, options: Record<string, Schema.Json>, t: typeof training, s: Stage.Artifact<unknown> = student) =>
        Stage.run(RecoveryStage.RecoveryStage, { strategy, options, training: t }, { teacher, student: s, latents: data })
      // Aligned by the decision that made the student (its kept blocks and groups); β and the weights the paper's.
      const recovered = yield* recover("masked-kd", {}, training)
      const out = yield* Stage.as(MarArtifact.Model, recovered, { stage: "test", input: "model" })
      assert.deepStrictEqual([out.output.family, out.output.config], ["mar", student.output.config])
      assert.deepStrictEqual([recovered.output.strategy, "steps" in recovered.output && recovered.output.steps], ["masked-kd", 10])
      assert.isFalse("diverged" in recovered.output)
      const terms = (yield* Trainer.readCurve(recovered))[0]!.terms
      assert.deepStrictEqual(Object.keys(terms).sort(), ["gt", "kd", "rep"])
      assert.isAbove(terms["kd"]!, 0)
      assert.strictEqual(recovered.output.headline["initDistillLoss"], terms["rep"])

      // The teacher distilled into itself (every block aligned with itself): both KD terms start at exactly 0.
      const self = yield* recover("repkd", { alignment: { kept: [0, 1, 2, 3] } }, { ...training, steps: 1, emaDecay: 0 }, teacher)
      const first = (yield* Trainer.readCurve(self))[0]!.terms
      assert.strictEqual(first["kd"], 0)
      assert.strictEqual(first["rep"], 0)

      // A student block aligned with a teacher block of the other half is refused.
      // (Kept [2, 3] without groups: student layer 0, an encoder block, ↔ teacher block 2, a decoder block.)
      const crossed = yield* Effect.flip(recover("repkd", { alignment: { kept: [2, 3] } }, training))
      assert.match(crossed.message, /student block 0 \(encoder\) is aligned with teacher block 2 \(decoder\)/)
      // A DiT student of a MAR teacher is refused.
      const dit = yield* Stage.run(Pretrain.PretrainStage, Pipeline.pretrain, { latents: data })
      const other = yield* Effect.flip(recover("finetune", {}, training, dit))
      assert.match(other.message, /a dit student of a mar teacher/)

      // The recovered TinyMAR samples.
      const model = yield* MarArtifact.read(out, { ema: true })
      const params = HostTensor.treeToTensors(model.params)
      const sampler = yield* MarSampling.make(model.config, { iterations: 4, cfgScale: 2, cfgSchedule: "linear", temperature: 1, seed: 0 })
      const latents = sampler.sample({ config: model.config, params }, 0, [0, 1, 2])
      assert.deepStrictEqual(latents.shape, [3, 4, 4, 2])
      assert.isTrue(Array.from(latents.dataSync()).every(Number.isFinite))
      latents.dispose()
      ParamTree.dispose(params)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), { timeout: 300_000 })
})
