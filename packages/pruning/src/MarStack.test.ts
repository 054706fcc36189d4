import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Fixtures as ModelFixtures, Mar, MarArtifact, MarConfig, MarStateDict } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as MarStack from "./MarStack.ts"
import * as PruneStage from "./PruneStage.ts"
import * as Selection from "./Selection.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

/** Random weights N(0, 0.3²), except that the listed blocks of the stack are the identity (attn.proj and mlp.fc2 zero). */
const teacherWeights = (config: MarConfig.MarConfig, identity: ReadonlyArray<number>): HostTensor.HostTree => {
  const e = config.encoderDepth
  const zeroed = identity.map((i) => (i < e ? `encoder_blocks.${i}.` : `decoder_blocks.${i - e}.`))
  return ParamTree.unflatten(MarStateDict.referenceShapes(config).map(([key, shape]) => {
    const n = HostTensor.numel(shape)
    const zero = zeroed.some((p) => key.startsWith(`${p}attn.proj.`) || key.startsWith(`${p}mlp.fc2.`))
    const values = zero ? new Float32Array(n) : Rng.normal(Rng.stream(0, `fixture/${key}`), 0, n).map((v) => v * 0.3)
    return [key, HostTensor.float32(shape, values)] as const
  }))
}

const Teacher = Stage.make({
  name: "fixture-mar-teacher",
  module: import.meta.url,
  config: Schema.Struct({ config: MarConfig.MarConfig, identity: Schema.Array(Schema.Int) }),
  output: MarArtifact.Model,
  run: (c, _inputs, ctx) => MarArtifact.write(ctx, { config: c.config, params: teacherWeights(c.config, c.identity) })
})

/** 3 + 3 blocks; blocks 1 (encoder) and 4 (decoder) are the identity. */
const config: MarConfig.MarConfig = { ...ModelFixtures.mar, encoderDepth: 3, decoderDepth: 3, attnDropout: 0, projDropout: 0, labelDropProb: 0 }

const prepare = Effect.gen(function*() {
  const teacher = yield* Stage.run(Teacher, { config, identity: [1, 4] }, {})
  const data = yield* Stage.run(Fixtures.Latents, { count: 8, shape: [4, 4, 2], classes: 3, seed: 1 }, {})
  return { teacher, data }
})

const prune = (method: string, target: { keep?: number; scheme?: string }, iterations = 0) =>
  Effect.gen(function*() {
    const inputs = yield* prepare
    const options = method === "learnable" ? { iterations, batchSize: 4, logEvery: 2, checkpointEvery: 0 } : {}
    const pruned = yield* Fixtures.prune({ method, ...target, seed: 0, calibration: 8, options }, inputs)
    return { ...inputs, pruned, decision: yield* PruneStage.readDecision(pruned) }
  })

describe("MAR as a block stack", () => {
  it.live("sensitivity: removing an identity block (encoder or decoder) changes the calibration loss by exactly 0; the others matter", () =>
    Effect.gen(function*() {
      // (With random weights, removing a real block may lower the loss: only the identity blocks' scores are known.)
      const { scores } = (yield* Fixtures.decision((yield* prune("sensitivity", { keep: 4 })).pruned, Selection.Scores)).evidence
      for (const i of [1, 4]) assert.strictEqual(scores[i], 0, `block ${i}`)
      for (const i of [0, 2, 3, 5]) assert.notStrictEqual(scores[i], 0, `block ${i}`)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(env)))

  it.live("ShortGPT and Flux-Lite remove the identity blocks: cosine 1 and MSE 0 between their input and output", () =>
    Effect.gen(function*() {
      const shortgpt = yield* Fixtures.decision((yield* prune("shortgpt", { keep: 4 })).pruned, Selection.Scores)
      assert.deepStrictEqual(shortgpt.kept, [0, 2, 3, 5])
      for (const i of [1, 4]) assert.approximately(shortgpt.evidence.scores[i]!, 0, 1e-6)
      const flux = yield* Fixtures.decision((yield* prune("flux-lite", { keep: 4 })).pruned, Selection.Scores)
      assert.deepStrictEqual(flux.kept, [0, 2, 3, 5])
      for (const i of [1, 4]) assert.strictEqual(flux.evidence.scores[i], 0)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(env)))

  it.live("learnable 1:2 keeps one block of each pair; the export (the one prune-export of every family) splits the kept blocks into their halves and computes the gated teacher", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const { teacher, pruned, decision } = yield* prune("learnable", { scheme: "1:2" }, 4)
      assert.strictEqual(decision.kept.length, 3)
      assert.deepStrictEqual(decision.groups, [[0, 1], [2, 3], [4, 5]])
      decision.kept.forEach((k, g) => assert.isTrue(k === 2 * g || k === 2 * g + 1))
      assert.isTrue(Number.isFinite(pruned.output.calibrationLoss!))
      const exported = yield* Stage.run(PruneStage.ExportStage, {}, { decision: pruned, teacher })
      const out = exported.output
      if (out.family !== "mar") return assert.fail(`a MAR teacher gave a ${out.family}`)
      const e = decision.kept.filter((k) => k < 3).length
      assert.deepStrictEqual([out.config.encoderDepth, out.config.decoderDepth], [e, 3 - e])
      assert.strictEqual(out.parameters, MarStateDict.parameterCount(out.config))
      assert.deepStrictEqual([out.source, out.kept, out.groups], [teacher.key, decision.kept, decision.groups])
      const student = yield* MarArtifact.read({ ...exported, output: out }, { ema: true })
      const whole = yield* MarArtifact.read(teacher, { ema: true })
      const [small, gated] = yield* compute.scoped(Effect.gen(function*() {
        const x = tf.tensor4d(Rng.normal(Rng.stream(0, "test/x"), 0, 3 * 32), [3, 4, 4, 2])
        const inputs = { tokens: Mar.patchify(x, 2), mask: Mar.maskByOrder([0, 1, 2, 3, 3, 2, 1, 0, 1, 3, 0, 2], 3, 4, 2), labels: [0, 1, 3] }
        const mask = [0, 1, 2, 3, 4, 5].map((i) => (decision.kept.includes(i) ? 1 : 0))
        const gates = tf.tile(tf.tensor2d(mask, [1, 6]), [3, 1]) as tf.Tensor2D
        return [
          yield* compute.read(Mar.forward(student.config, HostTensor.treeToTensors(student.params), inputs)),
          yield* compute.read(Mar.forward(config, HostTensor.treeToTensors(whole.params), inputs, { gates }))
        ] as const
      }))
      small.forEach((v, i) => assert.approximately(v, gated[i]!, 1e-5))
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(env)), { timeout: 120_000 })

  it.live("the calibration loss of kept blocks equals that of the teacher gated to them", () =>
    Effect.gen(function*() {
      const inputs = yield* prepare
      const teacher = yield* MarArtifact.read(inputs.teacher, { ema: true })
      const source = yield* Stages.readLatents(inputs.data)
      const stack = yield* MarStack.of(config)
      const set = stack.calibrationSet(source.batch({ seed: 0, batchSize: 8 }, 0), 0)
      const params = HostTensor.treeToTensors(teacher.params)
      const kept = yield* stack.calibrationLoss(params, set, { kept: [0, 2, 5], batchSize: 3 })
      const gated = yield* stack.calibrationLoss(params, set, { mask: [1, 0, 1, 0, 0, 1] })
      assert.approximately(kept, gated, 1e-5 * gated)
      const whole = yield* stack.calibrationLoss(params, set)
      const noIdentity = yield* stack.calibrationLoss(params, set, { kept: [0, 2, 3, 5] })
      assert.approximately(whole, noIdentity, 1e-6 * whole)
      assert.notStrictEqual(kept, whole)
      ParamTree.dispose(params)
    }).pipe(Effect.provide(ArtifactStore.layerTemp), Effect.provide(env)))
})
