import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Console, Effect, FileSystem, Layer, Logger } from "effect"
import { Command } from "effect/cli"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Dataset, Stages } from "@tinyfusion/data"
import { Pretrain } from "@tinyfusion/diffusion"
import { Compute } from "@tinyfusion/tensor"
import { tinyfusion } from "../main.ts"
import { evenly } from "./finetune.ts"

/** Runs `tinyfusion …args` in this process: its stdout lines, or its failure. */
const cli = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const console_: Console.Console = Object.assign(Object.create(console), {
      log: (...xs: ReadonlyArray<unknown>) => lines.push(xs.map(String).join(" "))
    })
    const exit = yield* Command.runWith(tinyfusion, { version: "test" })(args).pipe(
      Effect.provideService(Console.Console, console_),
      Effect.exit
    )
    return { lines, ok: exit._tag === "Success", failure: exit._tag === "Failure" ? String(exit.cause) : "" }
  })

/** A 4-block teacher on synthetic 4×4×2 latents, in a store. */
const teacherIn = (root: string) =>
  Effect.gen(function*() {
    const ae = yield* Stage.run(Stages.AutoencoderStage, {
      dataset: "synthetic",
      model: { imageSize: 8, imageChannels: 1, channels: [4, 8], latentChannels: 2, klWeight: 1e-4 },
      training: { seed: 0, steps: 2, batchSize: 8, lr: 1e-3, clip: 1 },
      checkpointEvery: 0,
      scaleImages: 8,
      evalImages: 8
    }, {})
    const latents = yield* Stage.run(Stages.LatentsStage, { dataset: "synthetic", seed: 0, shardSize: 16, batchSize: 8 }, { autoencoder: ae })
    const teacher = yield* Stage.run(Pretrain.PretrainStage, {
      family: "dit",
      model: { inputSize: 4, patchSize: 2, inChannels: 2, hiddenSize: 16, depth: 4, numHeads: 2, mlpRatio: 2, numClasses: 3, classDropoutProb: 0.1, learnSigma: true },
      training: { steps: 4, batchSize: 8, seed: 0, lr: 1e-3, weightDecay: 0, emaDecay: 0.9, checkpointEvery: 0, curveEvery: 2, nonFinite: "skip" }
    }, { latents })
    return { latents: latents.key, teacher: teacher.key }
  }).pipe(Effect.provide(Layer.mergeAll(
    ArtifactStore.layer(root),
    Dataset.synthetic({ classes: 3, train: 16, test: 8, size: 8, channels: 1, seed: 0 }),
    Compute.wasm,
    Logger.layer([])
  )))

describe("tinyfusion finetune", () => {
  it("the default student keeps the first and last block, the rest evenly: SPEC's oracle for 28 → 14", () => {
    assert.deepStrictEqual(evenly(28, 14), [0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27])
    assert.deepStrictEqual(evenly(4, 2), [0, 3])
    assert.deepStrictEqual(evenly(5, 1), [0])
  })

  it.live("distils a student of a stored teacher's blocks; a key that is not a teacher is named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-finetune-" })
      const keys = yield* teacherIn(root)
      const run = (args: ReadonlyArray<string>) =>
        cli(["finetune", "--backend", "wasm", "--store", root, "--steps", "4", "--batch-size", "8", "--checkpoint-every", "2", "--curve-every", "1", ...args])

      const masked = yield* run(["--teacher", keys.teacher, "--kept", "1,2", "--group-size", "2"])
      assert.isTrue(masked.ok, masked.failure)
      const row = masked.lines[0]!.split("\n")[2]!
      assert.match(row, /^recovery\s+recovery-\w+\s+masked-kd \(2σ\)\s+dit DiT\(depth 2, .*\)\s+1,2\s+\S+\s+\S+\s+4 steps/)
      const key = row.split(/\s+/)[1]!
      const manifest = JSON.parse(yield* fs.readFileString(`${root}/artifacts/${key}/manifest.json`))
      assert.deepStrictEqual(manifest.config.loss, { strategy: "masked-kd", k: 2, alphaKd: 0.9, alphaGt: 0.1, beta: 0.01, alignment: { kept: [1, 2], groups: [[0, 1], [2, 3]] } })
      assert.deepStrictEqual(manifest.inputs.latents, keys.latents)

      // The default --keep is half the depth, evenly: blocks 0 and 3, with the fixed mapping.
      const fixed = yield* run(["--teacher", keys.teacher, "--strategy", "repkd", "--alignment", "fixed"])
      assert.isTrue(fixed.ok, fixed.failure)
      assert.match(fixed.lines[0]!, /repkd\s+dit DiT\(depth 2, .*\)\s+0,3\s/)

      const wrong = yield* run(["--teacher", keys.latents])
      assert.match(wrong.failure, /--teacher: latents-\w+ is not a pretrain artifact of the store/)
    })).pipe(Effect.provide(NodeServices.layer)), 60_000)
})
