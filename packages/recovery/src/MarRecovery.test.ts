import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { MarPretrain, Trainer } from "@tinyfusion/diffusion"
import { MarSampling } from "@tinyfusion/eval"
import { Fixtures, MarArtifact } from "@tinyfusion/models"
import { PruneStage } from "@tinyfusion/pruning"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Pipeline from "./fixtures/Pipeline.ts"
import * as MarRecovery from "./MarRecovery.ts"
import * as Recovery from "./Recovery.ts"

const layers = Layer.mergeAll(ArtifactStore.layerTemp, Pipeline.dataset, Logger.layer([])).pipe(Layer.provideMerge(NodeServices.layer))

const pretrain: MarPretrain.MarPretrainConfig = {
  model: Fixtures.mar,
  training: { steps: 20, batchSize: 8, seed: 0, lr: 2e-3, weightDecay: 0, maxGradNorm: 3, emaDecay: 0.9, checkpointEvery: 10, curveEvery: 5, nonFinite: "skip" }
}

const pruning = PruneStage.make({ teacher: MarPretrain.MarPretrainStage, data: Stages.LatentsStage, readTeacher: PruneStage.readMar, readData: Stages.readLatents })
const exported = PruneStage.marExport(pruning.prune, { teacher: MarPretrain.MarPretrainStage, readTeacher: PruneStage.readMar })
const Recover = MarRecovery.make({ teacher: MarPretrain.MarPretrainStage, student: exported })
const SelfRecover = MarRecovery.make({ teacher: MarPretrain.MarPretrainStage, student: MarPretrain.MarPretrainStage })

const training = { ...Recovery.paperTraining(10, 8, 0), lr: 1e-3, lrFloor: 5e-4, emaDecay: 0.9, checkpointEvery: 5, curveEvery: 5 }

describe("MAR recovery", () => {
  it.effect("pretrain → learnable 1:2 → export → masked KD → sampling: TinyMAR at test size; KD terms are 0 for a student equal to its teacher", () =>
    Effect.gen(function*() {
      const ae = yield* Stage.run(Stages.AutoencoderStage, Pipeline.autoencoder, {})
      const data = yield* Stage.run(Stages.LatentsStage, Pipeline.latents, { autoencoder: ae })
      const teacher = yield* Stage.run(MarPretrain.MarPretrainStage, pretrain, { latents: data })
      assert.deepStrictEqual([teacher.output.family, teacher.output.steps, teacher.output.skipped], ["mar", 20, []])
      assert.deepStrictEqual((yield* Trainer.readCurve(teacher)).map((p) => p.step), [0, 5, 10, 15, 19])

      const pruned = yield* Stage.run(pruning.prune, {
        method: "learnable",
        scheme: "1:2",
        seed: 0,
        calibration: 8,
        iterations: 3,
        options: { batchSize: 4, logEvery: 1, checkpointEvery: 0 }
      }, { teacher, data })
      const decision = yield* PruneStage.readDecision(pruned)
      const student = yield* Stage.run(exported, {}, { decision: pruned, teacher })
      assert.deepStrictEqual([student.output.config.encoderDepth, student.output.config.decoderDepth], [1, 1])
      const alignment = { kept: decision.kept, groups: decision.groups! }
      const recovered = yield* Stage.run(Recover, { loss: Recovery.paper("mar", "masked-kd", alignment, 2), training }, { teacher, student, latents: data })
      const out = recovered.output
      assert.deepStrictEqual([out.family, out.config, out.strategy, out.steps], ["mar", student.output.config, "masked-kd", 10])
      assert.isUndefined(out.diverged)
      const terms = (yield* Trainer.readCurve(recovered))[0]!.terms
      assert.deepStrictEqual(Object.keys(terms).sort(), ["gt", "kd", "rep"])
      assert.isAbove(terms["kd"]!, 0)
      assert.strictEqual(out.initialDistillLoss, terms["rep"])

      // The teacher distilled into itself (every block aligned with itself): both KD terms start at exactly 0.
      const self = yield* Stage.run(SelfRecover, {
        loss: Recovery.paper("mar", "repkd", { kept: [0, 1, 2, 3] }),
        training: { ...training, steps: 1, emaDecay: 0 }
      }, { teacher, student: teacher, latents: data })
      const first = (yield* Trainer.readCurve(self))[0]!.terms
      assert.strictEqual(first["kd"], 0)
      assert.strictEqual(first["rep"], 0)

      // A student block aligned with a teacher block of the other half is refused.
      // (Kept [2, 3] without groups: student layer 0, an encoder block, ↔ teacher block 2, a decoder block.)
      const crossed = yield* Effect.flip(Stage.run(Recover, {
        loss: Recovery.paper("mar", "repkd", { kept: [2, 3] }),
        training
      }, { teacher, student, latents: data }))
      assert.match(crossed.message, /student block 0 \(encoder\) is aligned with teacher block 2 \(decoder\)/)

      // The recovered TinyMAR samples.
      const model = yield* MarArtifact.read(recovered, { ema: true })
      const params = HostTensor.treeToTensors(model.params)
      const sampler = yield* MarSampling.make(model.config, { iterations: 4, cfgScale: 2, cfgSchedule: "linear", temperature: 1, seed: 0 })
      const latents = sampler.sample({ config: model.config, params }, 0, [0, 1, 2])
      assert.deepStrictEqual(latents.shape, [3, 4, 4, 2])
      assert.isTrue(Array.from(latents.dataSync()).every(Number.isFinite))
      latents.dispose()
      ParamTree.dispose(params)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), { timeout: 300_000 })
})
