import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, FileSystem, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as Learnable from "./Learnable.ts"
import * as PruneStage from "./PruneStage.ts"
import * as Scheme from "./Scheme.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

const softmax = (xs: ReadonlyArray<number>) => {
  const e = xs.map(Math.exp)
  const s = e.reduce((a, b) => a + b, 0)
  return e.map((v) => v / s)
}

describe("Learnable", () => {
  it("the decision is the argmax of the (EMA) logits per group; confidence max softmax(scaling × logits)", () => {
    // 1:2 on 5 layers: groups (0,1), (2,3), trailing 4.
    const d = Learnable.decide(Scheme.parse("1:2"), 5, [0.01, 0.03, 0.02, -0.01], 100)
    assert.deepStrictEqual(d.choice, [1, 0])
    assert.deepStrictEqual(d.kept, [1, 2, 4])
    const [p0, p1] = [softmax([1, 3]), softmax([2, -1])]
    d.probabilities[0]!.forEach((p, i) => assert.closeTo(p, p0[i]!, 1e-12))
    d.probabilities[1]!.forEach((p, i) => assert.closeTo(p, p1[i]!, 1e-12))
    assert.closeTo(d.confidence[0]!, 0.8807970779778823, 1e-12)
    assert.closeTo(d.confidence[1]!, 0.9525741268224334, 1e-12)
    assert.deepStrictEqual(d.slotProbability, [d.confidence[0], d.confidence[1], 1])
    // 2:4 candidates (0,1),(0,2),(0,3),(1,2),(1,3),(2,3): the argmax row 4 keeps layers 1 and 3; ties go to the first.
    assert.deepStrictEqual(Learnable.decide(Scheme.parse("2:4"), 4, [0, 0, 0, 0, 0.5, 0], 1).kept, [1, 3])
    const uniform = Learnable.decide(Scheme.parse("2:4"), 4, [0, 0, 0, 0, 0, 0], 100)
    assert.deepStrictEqual(uniform.kept, [0, 1])
    assert.closeTo(uniform.confidence[0]!, 1 / 6, 1e-12)
  })

  it.live("on a model whose blocks 1 and 2 are destructive, 1:2 with LoRA learns to drop them with confidence ≥ 0.9 in 350 steps", () =>
    Effect.gen(function*() {
      const destructive = { add: "output", size: 10 } as const
      const blocks = ["identity", destructive, destructive, "identity"] as const
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config: Fixtures.tiny(4), weights: { blocks } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 64, shape: [4, 4, 4], classes: 3, seed: 4 }, {})
      const pruned = yield* Fixtures.prune({
        method: "learnable",
        scheme: "1:2",
        seed: 0,
        calibration: 8,
        options: { iterations: 350, batchSize: 16, logEvery: 50, checkpointEvery: 0 }
      }, { teacher, data })
      const decision = yield* Fixtures.decision(pruned, Learnable.Evidence)
      const { confidence, history } = decision.evidence
      assert.deepStrictEqual(decision.kept, [0, 3])
      assert.isAtLeast(confidence, 0.9)
      // The headline figure of the evidence is the stage's metric and output.
      assert.strictEqual(pruned.output.headline["confidence"], confidence)
      assert.strictEqual(pruned.manifest.metrics["confidence"], confidence)
      assert.deepStrictEqual(decision.groups, [[0, 1], [2, 3]])
      assert.deepStrictEqual(history.map((h) => h.step), [0, 50, 100, 150, 200, 250, 300, 350])
      assert.deepStrictEqual(history[0], { step: 0, kept: [0, 2], probability: [0.5, 0.5] })
      assert.deepStrictEqual(history.at(-1)!.kept, [0, 3])
      // The decision is the EMA's, as stored beside it.
      const gates = yield* pruned.tensorMap("gates.safetensors")
      const ema = gates.get("ema")!.data
      const fromEma = Learnable.decide(Scheme.parse("1:2"), 4, ema, 100)
      assert.deepStrictEqual(fromEma.kept, decision.kept)
      assert.deepStrictEqual(fromEma.probabilities, decision.evidence.probabilities)
      assert.notDeepEqual(Array.from(ema), Array.from(gates.get("logits")!.data))
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)), 120_000)

  it.live("a run interrupted after a checkpoint and rerun ends with the same bits as an uninterrupted one", () =>
    Effect.gen(function*() {
      const config = yield* Stage.decodeConfig(PruneStage.PruneStage, {
        method: "learnable",
        scheme: "2:4",
        seed: 5,
        calibration: 4,
        options: { iterations: 12, batchSize: 4, logEvery: 3, checkpointEvery: 4 }
      })
      const prepare = Effect.gen(function*() {
        const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config: Fixtures.tiny(8), weights: { random: 1 } }, {})
        const data = yield* Stage.run(Fixtures.Latents, { count: 16, shape: [4, 4, 4], classes: 3, seed: 6 }, {})
        return { teacher, data }
      })
      const files = (artifact: Stage.Artifact<unknown>) =>
        Effect.all([artifact.bytes("decision.json"), artifact.bytes("gates.safetensors")])
      const reference = yield* Effect.gen(function*() {
        const inputs = yield* prepare
        return yield* files(yield* Stage.run(PruneStage.PruneStage, config, inputs))
      }).pipe(Effect.provide(ArtifactStore.layerTemp))
      const resumed = yield* Effect.gen(function*() {
        const store = yield* ArtifactStore
        const inputs = yield* prepare
        const key = yield* Stage.key(PruneStage.PruneStage, config, { teacher: inputs.teacher.key, data: inputs.data.key })
        const fiber = yield* Effect.forkChild(Stage.run(PruneStage.PruneStage, config, inputs))
        while ((yield* store.checkpoints(key)).length === 0) yield* Effect.sleep("5 millis")
        yield* Fiber.interrupt(fiber)
        const saved = (yield* store.checkpoints(key)).map((c) => c.step)
        assert.isTrue(saved.length > 0 && saved.every((s) => s < 12), `checkpoints at ${saved}`)
        const fs = yield* FileSystem.FileSystem
        assert.isFalse(yield* fs.exists(store.artifactDir(key)))
        return yield* files(yield* Stage.run(PruneStage.PruneStage, config, inputs))
      }).pipe(Effect.provide(ArtifactStore.layerTemp))
      assert.deepStrictEqual(resumed[0], reference[0])
      assert.deepStrictEqual(resumed[1], reference[1])
    }).pipe(Effect.provide(env)), 60_000)
})
