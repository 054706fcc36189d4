import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as Selection from "./Selection.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

describe("Sensitivity analysis", () => {
  it.live("keeps the two blocks that cancel each other; removing an identity block changes the loss by exactly 0", () =>
    Effect.gen(function*() {
      // Block 1 adds 3u to the state the prediction reads, block 4 takes it away; the rest are the identity.
      const blocks = ["identity", { add: "output", size: 3 }, "identity", "identity", { add: "output", size: -3 }, "identity"] as const
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config: Fixtures.tiny(6), weights: { blocks } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 8, shape: [4, 4, 4], classes: 3, seed: 1 }, {})
      const pruned = yield* Fixtures.prune({ method: "sensitivity", keep: 2, seed: 0, calibration: 8 }, { teacher, data })
      const decision = yield* Fixtures.decision(pruned, Selection.Scores)
      const { scores } = decision.evidence
      assert.deepStrictEqual(decision.kept, [1, 4])
      for (const i of [0, 2, 3, 5]) assert.strictEqual(scores[i], 0, `block ${i}`)
      // Without its partner the prediction is 4·3/√(2 + 9) ≈ 3.6 on every channel: the loss rises by more than 10.
      for (const i of [1, 4]) assert.isAbove(scores[i]!, 10, `block ${i}`)
      // The pruned model computes what the teacher computes (3u − 3u cancels exactly): the same calibration loss.
      const whole = yield* Fixtures.prune({ method: "oracle", keep: 6, seed: 0, calibration: 8 }, { teacher, data })
      assert.deepStrictEqual(whole.output.kept, [0, 1, 2, 3, 4, 5])
      assert.strictEqual(pruned.output.calibrationLoss, whole.output.calibrationLoss)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))
})
