import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { DiT } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as PruneStage from "./PruneStage.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

const config = Fixtures.tiny(6)

const prepare = Effect.gen(function*() {
  const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config, weights: { random: 3 } }, {})
  const data = yield* Stage.run(Fixtures.Latents, { count: 8, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
  return { teacher, data }
})

const base = { seed: 0, calibration: 4 }

describe("prune and prune-export stages", () => {
  it.live("after LoRA mask learning, the exported model is the original teacher gated with the decision's mask, bit for bit", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const inputs = yield* prepare
      const pruned = yield* Fixtures.prune({
        ...base,
        method: "learnable",
        scheme: "1:2",
        options: { iterations: 3, batchSize: 4, logEvery: 1, checkpointEvery: 0 }
      }, inputs)
      const exported = yield* Stage.run(PruneStage.ExportStage, {}, { decision: pruned, teacher: inputs.teacher })
      const kept = pruned.output.kept
      const student = yield* PruneStage.readModel(exported)
      const teacher = yield* PruneStage.readModel(inputs.teacher)
      if (exported.output.family === "mar" || student.family === "mar" || teacher.family === "mar") return assert.fail("a DiT teacher gives a DiT")
      assert.strictEqual(kept.length, 3)
      assert.deepStrictEqual(exported.output.kept, kept)
      assert.deepStrictEqual(exported.output.groups, [[0, 1], [2, 3], [4, 5]])
      assert.strictEqual(exported.output.config.depth, 3)
      assert.deepStrictEqual({ ...exported.output.config, depth: 6 }, config)

      // Renumbered original weights: student block i is teacher block kept[i], every tensor bit-equal.
      const flatStudent = new Map(ParamTree.flatten(student.params, HostTensor.isHostTensor))
      for (const [key, t] of ParamTree.flatten(teacher.params, HostTensor.isHostTensor)) {
        const match = /^blocks\.(\d+)\.(.*)$/.exec(key)
        if (match === null) assert.isTrue(HostTensor.bitEqual(flatStudent.get(key)!, t), key)
        else if (kept.includes(Number(match[1]))) {
          const renamed = `blocks.${kept.indexOf(Number(match[1]))}.${match[2]}`
          assert.isTrue(HostTensor.bitEqual(flatStudent.get(renamed)!, t), `${key} → ${renamed}`)
        }
      }
      assert.strictEqual(flatStudent.size, ParamTree.flatten(teacher.params, HostTensor.isHostTensor).length - 3 * 10)

      const [small, gated] = yield* compute.scoped(Effect.gen(function*() {
        const b = 5
        const x = tf.tensor4d(Rng.normal(Rng.stream(0, "test/x"), 0, b * 64), [b, 4, 4, 4])
        const inputs = { x, t: [0, 250, 500, 750, 999], y: [0, 1, 2, 3, 1] }
        const mask = Array.from({ length: 6 }, (_, i) => (kept.includes(i) ? 1 : 0))
        const gates = tf.tile(tf.tensor2d(mask, [1, 6]), [b, 1]) as tf.Tensor2D
        const outSmall = DiT.forward(student.config, HostTensor.treeToTensors(student.params), inputs)
        const outGated = DiT.forward(config, HostTensor.treeToTensors(teacher.params), inputs, { gates })
        return [yield* HostTensor.fromTensor(outSmall), yield* HostTensor.fromTensor(outGated)] as const
      }))
      assert.isTrue(HostTensor.bitEqual(small, gated))
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))

  it.live("bad requests fail with a typed error that names the problem, and write nothing", () =>
    Effect.gen(function*() {
      const inputs = yield* prepare
      const fail = (c: Partial<typeof PruneStage.PruneConfig.Encoded> & { readonly method: string }) => Effect.flip(Fixtures.prune({ ...base, ...c }, inputs))
      const unknown = yield* fail({ method: "magic", keep: 3 })
      assert.strictEqual(unknown._tag, "UnknownMethod")
      assert.match(unknown.message, /no pruner named "magic"; known: diff-pruning, flux-lite, learnable, oracle, random, sensitivity, shortgpt/)
      const mismatch = yield* fail({ method: "oracle", keep: 2, scheme: "1:2" })
      assert.strictEqual(mismatch._tag, "InvalidTarget")
      assert.match(mismatch.message, /scheme 1:2 keeps 3 blocks, not 2/)
      const noScheme = yield* fail({ method: "learnable", keep: 3, options: { iterations: 5 } })
      assert.strictEqual(noScheme._tag, "UnsupportedTarget")
      assert.match(noScheme.message, /pruner learnable cannot keep 3: it learns N:M masks/)
      const oracleScheme = yield* fail({ method: "oracle", scheme: "1:2" })
      assert.match(oracleScheme.message, /pruner oracle cannot scheme 1:2 \(keep 3\)/)
      const badOption = yield* fail({ method: "learnable", scheme: "1:2", options: { update: "half", batchsize: 4 } })
      assert.strictEqual(badOption._tag, "InvalidOptions")
      assert.match(badOption.message, /invalid options for pruner learnable:.*update.*/)
      assert.match(badOption.message, /batchsize/)
      const noIterations = yield* fail({ method: "learnable", scheme: "1:2", options: { iterations: 0 } })
      assert.match(noIterations.message, /iterations/)
      const badScheme = yield* fail({ method: "learnable", scheme: "3:2" })
      assert.match(badScheme.message, /pruning scheme "3:2": needs 1 ≤ N ≤ M/)
      const misspelt = yield* Effect.flip(Stage.decodeConfig(PruneStage.PruneStage, { method: "oracle", keep: 3, seed: 0, calibraton: 4 }))
      assert.match(misspelt.message, /calibraton/)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))

  it.live("oracle through the stage: the uniform keep, and the pruned model's calibration loss", () =>
    Effect.gen(function*() {
      const inputs = yield* prepare
      const pruned = yield* Fixtures.prune({ ...base, method: "oracle", keep: 4 }, inputs)
      assert.deepStrictEqual(pruned.output.kept, [0, 2, 3, 5])
      assert.isTrue(Number.isFinite(pruned.output.calibrationLoss))
      assert.strictEqual(pruned.manifest.metrics["calibrationLoss"], pruned.output.calibrationLoss)
      assert.deepStrictEqual(pruned.output.headline, {})
      // The method's defaults are part of the config the key covers: the same decision however they were given.
      const explicit = yield* Fixtures.prune({ ...base, method: "oracle", keep: 4, options: {} }, inputs)
      assert.strictEqual(explicit.key, pruned.key)
      const decision = yield* PruneStage.readDecision(pruned)
      assert.strictEqual(decision.calibrationLoss, pruned.output.calibrationLoss)
      assert.isUndefined(decision.groups)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))
})
