import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import { ArtifactStore, Method, Stage } from "@tinyfusion/core"
import { Png, Stages } from "@tinyfusion/data"
import { Pretrain, Trainer } from "@tinyfusion/diffusion"
import { ModelArtifact, Models } from "@tinyfusion/models"
import { PruneStage } from "@tinyfusion/pruning"
import { Compute, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import * as Pipeline from "./fixtures/Pipeline.ts"
import * as Recovery from "./Recovery.ts"
import * as RecoveryStage from "./RecoveryStage.ts"
import * as Strategies from "./Strategies.ts"

const layers = Layer.mergeAll(ArtifactStore.layerTemp, Pipeline.dataset, Logger.layer([])).pipe(Layer.provideMerge(NodeServices.layer))

const flat = (tree: HostTensor.HostTree) => new Map(ParamTree.flatten(tree, HostTensor.isHostTensor))

/** A strategy added from outside the package, as one value: the diffusion loss times its option; its evidence the loss at step 0. */
const scaled = Recovery.make({
  name: "scaled-gt",
  description: "The diffusion loss times a weight",
  module: import.meta.url,
  options: Schema.Struct({ weight: Method.option(Schema.Finite, 2, "Weight of the diffusion loss") }),
  evidence: Schema.Struct({ firstLoss: Schema.optional(Schema.Finite) }),
  distils: false,
  task: ({ options, models: { student } }) =>
    Effect.succeed({
      data: student.data,
      init: student.init,
      draws: student.draws,
      loss: (batch) => (params) => {
        const gt = student.loss(params, batch)
        return { loss: tf.mul(gt, options.weight) as tf.Scalar, terms: { gt } }
      }
    }),
  report: (_options, curve) => (curve[0]?.step === 0 ? { firstLoss: curve[0].loss } : {})
})

/** A recovery's output as a DiT's (these tests recover DiTs). */
const recovered = (artifact: Stage.Artifact<RecoveryStage.RecoveryOutput>) =>
  Schema.decodeUnknownSync(Schema.Struct({ ...RecoveryStage.Recovered.members[0].fields }))(artifact.output)

/** A model artifact as a DiT's, with the blocks it was made of. */
const ditBlocks = (artifact: Stage.Artifact<unknown>) =>
  Stage.as(Schema.Struct({ ...ModelArtifact.Fields, ...Models.BlockFields }), artifact, { stage: "test", input: "student" })

describe("recovery stages", () => {
  it.effect("select-blocks, then masked KD: the student as a model artifact, Table 5's initial loss, the curve; divergence is an outcome", () =>
    Effect.gen(function*() {
      const { data, teacher, student: selected, recovered: run } = yield* Pipeline.run()
      const student = yield* ditBlocks(selected)
      const run_ = (config: RecoveryStage.RecoveryConfig, s: Stage.Artifact<unknown> = student) =>
        Stage.run(RecoveryStage.RecoveryStage, config, { teacher, student: s, latents: data })

      // The student is the teacher's EMA blocks 1 and 2, renumbered, and says so.
      const t = flat((yield* ModelArtifact.read(teacher, { ema: true })).params)
      const s = flat((yield* ModelArtifact.read(student, { ema: true })).params)
      assert.deepStrictEqual([student.output.config.depth, student.output.teacherDepth, student.output.kept], [2, 4, [1, 2]])
      assert.deepStrictEqual([student.output.source, student.output.groups], [teacher.key, [[0, 1], [2, 3]]])
      assert.isTrue(HostTensor.bitEqual(s.get("blocks.0.mlp.fc1.weight")!, t.get("blocks.1.mlp.fc1.weight")!))
      assert.isTrue(HostTensor.bitEqual(s.get("blocks.1.attn.qkv.bias")!, t.get("blocks.2.attn.qkv.bias")!))
      assert.isTrue(HostTensor.bitEqual(s.get("final_layer.linear.weight")!, t.get("final_layer.linear.weight")!))

      const out = recovered(run)
      assert.deepStrictEqual([out.family, out.config, out.strategy, out.steps, out.skipped], ["dit", student.output.config, "masked-kd", 40, []])
      assert.strictEqual(out.parameters, student.output.parameters)
      // The strategy's defaults are part of the config the key covers.
      assert.deepStrictEqual((run.manifest.config as { readonly options: unknown }).options, {
        alphaKd: 0.9,
        alphaGt: 0.1,
        beta: "paper",
        alignment: "decision",
        k: 2
      })
      const curve = yield* Trainer.readCurve(run)
      assert.deepStrictEqual(curve.map((p) => p.step), [0, 5, 10, 15, 20, 25, 30, 35, 39])
      assert.deepStrictEqual(Object.keys(curve[0]!.terms).sort(), ["gt", "kd", "rep"])
      assert.deepStrictEqual(out.headline, { initDistillLoss: curve[0]!.terms["rep"]! })
      assert.isAbove(out.headline["initDistillLoss"]!, 0)
      assert.strictEqual(run.manifest.metrics["initDistillLoss"], out.headline["initDistillLoss"])
      assert.deepStrictEqual(yield* run.json(RecoveryStage.files.evidence, Recovery.InitialDistillLoss), out.headline)
      assert.strictEqual(out.finalLoss, curve.at(-1)!.loss)
      yield* Png.decode(yield* run.bytes(Trainer.files.plot), Trainer.files.plot)
      const weights = yield* ModelArtifact.read({ ...run, output: out }, { ema: true })
      assert.isTrue(weights.ema)
      assert.isFalse(HostTensor.bitEqual(flat(weights.params).get("blocks.0.mlp.fc1.weight")!, s.get("blocks.0.mlp.fc1.weight")!))

      // Logits KD reports the output KD term at step 0; fine-tuning has no distillation loss.
      const short = { ...Pipeline.recovery.training, steps: 3 }
      const logits = yield* run_({ strategy: "logits-kd", options: {}, training: short })
      assert.deepStrictEqual(recovered(logits).headline, { initDistillLoss: (yield* Trainer.readCurve(logits))[0]!.terms["kd"]! })
      const plain = yield* run_({ strategy: "finetune", options: {}, training: short })
      assert.deepStrictEqual(recovered(plain).headline, {})
      assert.deepStrictEqual(Object.keys((yield* Trainer.readCurve(plain))[0]!.terms), ["gt"])

      // A learning rate that blows the weights up: the run ends diverged, holds no model, and says so.
      const blowUp = { ...Pipeline.recovery, training: { ...Pipeline.recovery.training, lr: 1e30, lrFloor: 1e30 } }
      const blown = yield* run_(blowUp)
      assert.isTrue("diverged" in blown.output)
      assert.isFalse(blown.manifest.files.some((f) => f.name === ModelArtifact.files.raw))
      if (!("diverged" in blown.output)) return
      assert.strictEqual(blown.manifest.metrics["divergedStep"], blown.output.diverged.step)
      assert.match(blown.output.diverged.loss, /^(NaN|-?Infinity)$/)
      // No stage that needs a model takes it.
      const refused = yield* Effect.flip(run_(Pipeline.recovery, blown))
      assert.strictEqual(refused._tag, "InputMismatch")
      assert.match(refused.message, /input student \(recovery artifact recovery-\w+\) does not fit/)
      // Diverged is a result: a rerun is a cache hit.
      assert.isTrue((yield* run_(blowUp)).cached)

      const misaligned = yield* Effect.flip(run_({ ...Pipeline.recovery, options: { alignment: { kept: [1, 2, 3] } } }))
      assert.strictEqual(misaligned._tag, "InvalidAlignment")
      assert.match(misaligned.message, /3 kept blocks for a student of depth 2/)

      const badSelection = yield* Effect.flip(Stage.run(RecoveryStage.SelectStage, { kept: [2, 1] }, { teacher }))
      assert.match(badSelection.message, /invalid block selection: kept blocks must be ascending and distinct, got \[2,1\]/)

      const badOption = yield* Effect.flip(run_({ ...Pipeline.recovery, options: { k: 0 } }))
      assert.strictEqual(badOption._tag, "InvalidOptions")
      assert.match(badOption.message, /invalid options for recovery strategy masked-kd: .*\["k"\]/)
      const unknown = yield* Effect.flip(run_({ ...Pipeline.recovery, strategy: "magic" }))
      assert.match(unknown.message, /no recovery strategy named "magic"; known: finetune, logits-kd, masked-kd, repkd/)
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 90_000)

  it.effect("a strategy added as one value runs by name once its layer is provided, with its options and its evidence's headline", () =>
    Effect.gen(function*() {
      const { data, teacher, student } = yield* Pipeline.run({ recovery: { ...Pipeline.recovery, training: { ...Pipeline.recovery.training, steps: 1 } } })
      const config = { strategy: "scaled-gt", options: { weight: 3 }, training: { ...Pipeline.recovery.training, steps: 3 } }
      const run = Stage.run(RecoveryStage.RecoveryStage, config, { teacher, student, latents: data })
      const unknown = yield* Effect.flip(run)
      assert.match(unknown.message, /no recovery strategy named "scaled-gt"/)
      const done = yield* run.pipe(Effect.provide(Strategies.layer([scaled])))
      const curve = yield* Trainer.readCurve(done)
      assert.closeTo(curve[0]!.loss, 3 * curve[0]!.terms["gt"]!, 1e-6 * curve[0]!.loss)
      assert.deepStrictEqual(recovered(done).headline, { firstLoss: curve[0]!.loss })
      assert.deepStrictEqual((done.manifest.config as { readonly options: unknown }).options, { weight: 3 })
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 90_000)

  it.effect("a width-pruned student (Diff-Pruning's export) fine-tunes and distils its outputs; hidden-state distillation is refused", () =>
    Effect.gen(function*() {
      const ae = yield* Stage.run(Stages.AutoencoderStage, Pipeline.autoencoder, {})
      const data = yield* Stage.run(Stages.LatentsStage, Pipeline.latents, { autoencoder: ae })
      const teacher = yield* Stage.run(Pretrain.PretrainStage, Pipeline.pretrain, { latents: data })
      const config = yield* Stage.decodeConfig(PruneStage.PruneStage, {
        method: "diff-pruning",
        keep: 4,
        seed: 0,
        calibration: 8,
        options: { ratio: 0.5, stride: 250 }
      })
      const decision = yield* Stage.run(PruneStage.PruneStage, config, { teacher, data })
      const student = yield* ditBlocks(yield* Stage.run(PruneStage.ExportStage, {}, { decision, teacher }))
      assert.strictEqual(student.output.config.depth, 4)
      assert.isBelow(student.output.config.hiddenSize, Pipeline.teacherModel.hiddenSize)
      const training = { ...Pipeline.recovery.training, steps: 3 }
      const recover = (strategy: string) => Stage.run(RecoveryStage.RecoveryStage, { strategy, options: {}, training }, { teacher, student, latents: data })
      const tuned = recovered(yield* recover("finetune"))
      assert.deepStrictEqual(tuned.config, student.output.config)
      assert.strictEqual(tuned.parameters, student.output.parameters)
      const tunedArtifact = yield* Stage.open((yield* recover("finetune")).key)
      const weights = flat((yield* ModelArtifact.read({ ...tunedArtifact, output: tuned }, { ema: false })).params)
      const pruned = flat((yield* ModelArtifact.read(student, { ema: false })).params)
      assert.deepStrictEqual(weights.get("blocks.3.mlp.fc1.weight")!.shape, pruned.get("blocks.3.mlp.fc1.weight")!.shape)
      assert.isFalse(HostTensor.bitEqual(weights.get("blocks.3.mlp.fc1.weight")!, pruned.get("blocks.3.mlp.fc1.weight")!))
      assert.isAbove(recovered(yield* recover("logits-kd")).headline["initDistillLoss"]!, 0)
      const rep = yield* Effect.flip(recover("masked-kd"))
      assert.strictEqual(rep._tag, "IncompatibleModels")
      assert.match(rep.message, new RegExp(`masked-kd matches hidden states, but the student is ${student.output.config.hiddenSize} wide and the teacher 16`))
    }).pipe(Effect.provide(layers), Effect.provide(Compute.wasm)), 90_000)
})
