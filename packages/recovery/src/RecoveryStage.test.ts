import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Png, Stages } from "@tinyfusion/data"
import { Pretrain, Trainer } from "@tinyfusion/diffusion"
import { ModelArtifact } from "@tinyfusion/models"
import { PruneStage } from "@tinyfusion/pruning"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as Pipeline from "./fixtures/Pipeline.ts"
import * as Recovery from "./Recovery.ts"
import * as RecoveryStage from "./RecoveryStage.ts"

const layers = Layer.mergeAll(ArtifactStore.layerTemp, Pipeline.dataset, Logger.layer([])).pipe(Layer.provideMerge(NodeServices.layer))

const flat = (tree: HostTensor.HostTree) => new Map(ParamTree.flatten(tree, HostTensor.isHostTensor))

describe("recovery stages", () => {
  it.effect("select-blocks, then masked KD: the student as a model artifact, Table 5's initial loss, the curve; divergence is an outcome", () =>
    Effect.gen(function*() {
      const { data, teacher, student, recovered } = yield* Pipeline.run()

      // The student is the teacher's EMA blocks 1 and 2, renumbered.
      const t = flat((yield* ModelArtifact.read(teacher, { ema: true })).params)
      const s = flat((yield* ModelArtifact.read(student, { ema: true })).params)
      assert.deepStrictEqual([student.output.config.depth, student.output.teacherDepth, student.output.kept], [2, 4, [1, 2]])
      assert.isTrue(HostTensor.bitEqual(s.get("blocks.0.mlp.fc1.weight")!, t.get("blocks.1.mlp.fc1.weight")!))
      assert.isTrue(HostTensor.bitEqual(s.get("blocks.1.attn.qkv.bias")!, t.get("blocks.2.attn.qkv.bias")!))
      assert.isTrue(HostTensor.bitEqual(s.get("final_layer.linear.weight")!, t.get("final_layer.linear.weight")!))

      const out = recovered.output
      assert.deepStrictEqual([out.family, out.config, out.strategy, out.steps, out.skipped], ["dit", student.output.config, "masked-kd", 40, []])
      assert.isUndefined(out.diverged)
      assert.strictEqual(out.parameters, student.output.parameters)
      const curve = yield* Trainer.readCurve(recovered)
      assert.deepStrictEqual(curve.map((p) => p.step), [0, 5, 10, 15, 20, 25, 30, 35, 39])
      assert.deepStrictEqual(Object.keys(curve[0]!.terms).sort(), ["gt", "kd", "rep"])
      assert.strictEqual(out.initialDistillLoss, curve[0]!.terms["rep"])
      assert.isAbove(out.initialDistillLoss!, 0)
      assert.strictEqual(recovered.manifest.metrics["initial_distill_loss"], out.initialDistillLoss)
      assert.strictEqual(out.finalLoss, curve.at(-1)!.loss)
      yield* Png.decode(yield* recovered.bytes(Trainer.files.plot), Trainer.files.plot)
      const weights = yield* RecoveryStage.readRecovered(recovered, { ema: true })
      assert.isTrue(weights.ema)
      assert.isFalse(HostTensor.bitEqual(flat(weights.params).get("blocks.0.mlp.fc1.weight")!, s.get("blocks.0.mlp.fc1.weight")!))

      // Logits KD reports the output KD term at step 0; fine-tuning has no distillation loss.
      const logits = yield* Stage.run(Pipeline.Recover, {
        ...Pipeline.recovery,
        loss: Recovery.paper("dit", "logits-kd", "fixed"),
        training: { ...Pipeline.recovery.training, steps: 3 }
      }, { teacher, student, latents: data })
      assert.strictEqual(logits.output.initialDistillLoss, (yield* Trainer.readCurve(logits))[0]!.terms["kd"])
      const plain = yield* Stage.run(Pipeline.Recover, {
        ...Pipeline.recovery,
        loss: Recovery.paper("dit", "finetune", "fixed"),
        training: { ...Pipeline.recovery.training, steps: 3 }
      }, { teacher, student, latents: data })
      assert.isNull(plain.output.initialDistillLoss)
      assert.deepStrictEqual(Object.keys((yield* Trainer.readCurve(plain))[0]!.terms), ["gt"])

      // A learning rate that blows the weights up: the run ends diverged, with no weights, and says so.
      const blown = yield* Stage.run(Pipeline.Recover, {
        ...Pipeline.recovery,
        training: { ...Pipeline.recovery.training, lr: 1e30, lrFloor: 1e30 }
      }, { teacher, student, latents: data })
      assert.isDefined(blown.output.diverged)
      assert.isFalse(blown.manifest.files.some((f) => f.name === ModelArtifact.files.raw))
      assert.strictEqual(blown.manifest.metrics["diverged_step"], blown.output.diverged!.step)
      const refused = yield* Effect.flip(RecoveryStage.readRecovered(blown, { ema: true }))
      assert.strictEqual(refused._tag, "RunDiverged")
      assert.match(refused.message, /diverged \(loss (NaN|-?Infinity) at step \d+\): it has no weights/)
      // Diverged is a result: a rerun is a cache hit.
      assert.isTrue((yield* Stage.run(Pipeline.Recover, {
        ...Pipeline.recovery,
        training: { ...Pipeline.recovery.training, lr: 1e30, lrFloor: 1e30 }
      }, { teacher, student, latents: data })).cached)

      const misaligned = yield* Effect.flip(Stage.run(Pipeline.Recover, {
        ...Pipeline.recovery,
        loss: { ...Pipeline.recovery.loss, alignment: { kept: [1, 2, 3] } }
      }, { teacher, student, latents: data }))
      assert.strictEqual(misaligned._tag, "InvalidAlignment")
      assert.match(misaligned.message, /3 kept blocks for a student of depth 2/)

      const badSelection = yield* Effect.flip(Stage.run(Pipeline.Select, { kept: [2, 1] }, { teacher }))
      assert.match(badSelection.message, /invalid block selection: kept blocks must be ascending and distinct, got \[2,1\]/)

      const bad = yield* Effect.flip(Stage.decodeConfig(Pipeline.Recover, {
        ...Pipeline.recovery,
        loss: { ...Pipeline.recovery.loss, k: undefined }
      }))
      assert.match(bad.message, /masked-kd needs a threshold k/)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 90_000)

  it.effect("a width-pruned student (Diff-Pruning's export) fine-tunes and distils its outputs; hidden-state distillation is refused", () =>
    Effect.gen(function*() {
      const ae = yield* Stage.run(Stages.AutoencoderStage, Pipeline.autoencoder, {})
      const data = yield* Stage.run(Stages.LatentsStage, Pipeline.latents, { autoencoder: ae })
      const teacher = yield* Stage.run(Pretrain.PretrainStage, Pipeline.pretrain, { latents: data })
      const pruning = PruneStage.make({ teacher: Pretrain.PretrainStage, data: Stages.LatentsStage, readTeacher: PruneStage.readModel, readData: Stages.readLatents })
      const decision = yield* Stage.run(pruning.prune, {
        method: "diff-pruning",
        keep: 4,
        seed: 0,
        calibration: 8,
        iterations: 0,
        options: { ratio: 0.5, stride: 250 }
      }, { teacher, data })
      const student = yield* Stage.run(pruning.export, {}, { decision, teacher })
      assert.strictEqual(student.output.config.depth, 4)
      assert.isBelow(student.output.config.hiddenSize, Pipeline.teacherModel.hiddenSize)
      const Recover = RecoveryStage.make({ teacher: Pretrain.PretrainStage, student: pruning.export })
      const training = { ...Pipeline.recovery.training, steps: 3 }
      const alignment = { kept: [0, 1, 2, 3] }
      const tuned = yield* Stage.run(Recover, { loss: Recovery.paper("dit", "finetune", alignment), training }, { teacher, student, latents: data })
      assert.deepStrictEqual(tuned.output.config, student.output.config)
      assert.strictEqual(tuned.output.parameters, student.output.parameters)
      const recovered = flat((yield* RecoveryStage.readRecovered(tuned, { ema: false })).params)
      const pruned = flat((yield* ModelArtifact.read(student, { ema: false })).params)
      assert.deepStrictEqual(recovered.get("blocks.3.mlp.fc1.weight")!.shape, pruned.get("blocks.3.mlp.fc1.weight")!.shape)
      assert.isFalse(HostTensor.bitEqual(recovered.get("blocks.3.mlp.fc1.weight")!, pruned.get("blocks.3.mlp.fc1.weight")!))
      const logits = yield* Stage.run(Recover, { loss: Recovery.paper("dit", "logits-kd", alignment), training }, { teacher, student, latents: data })
      assert.isAbove(logits.output.initialDistillLoss!, 0)
      const rep = yield* Effect.flip(Stage.run(Recover, { loss: Recovery.paper("dit", "masked-kd", alignment, 2), training }, { teacher, student, latents: data }))
      assert.strictEqual(rep._tag, "IncompatibleModels")
      assert.match(rep.message, new RegExp(`masked-kd matches hidden states, but the student is ${student.output.config.hiddenSize} wide and the teacher 16`))
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 90_000)
})
