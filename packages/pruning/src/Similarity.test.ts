import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Compute } from "@tinyfusion/tensor"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as Selection from "./Selection.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

const strong = { add: "hidden", size: 2 } as const
const weak = { add: "hidden", size: 0.01 } as const

/** Blocks 1, 3 and 5 are the identity; 0 and 2 move the hidden state a lot, 4 barely. */
const blocks = [strong, "identity", strong, "identity", weak, "identity"] as const

const cosine = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => {
  const dot = a.reduce((s, v, i) => s + v * b[i]!, 0)
  return dot / Math.sqrt(a.reduce((s, v) => s + v * v, 0) * b.reduce((s, v) => s + v * v, 0))
}

describe("ShortGPT and Flux-Lite", () => {
  it.live("on blocks made identity: both remove them, ShortGPT never the last; the measures in closed form", () =>
    Effect.gen(function*() {
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config: Fixtures.tiny(6), weights: { blocks } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 8, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const run = (method: string) =>
        Effect.flatMap(Fixtures.prune({ method, keep: 3, seed: 0, calibration: 8 }, { teacher, data }), (a) => Fixtures.decision(a, Selection.Scores))
      const flux = yield* run("flux-lite")
      const short = yield* run("shortgpt")
      assert.deepStrictEqual(flux.kept, [0, 2, 4])
      assert.deepStrictEqual(short.kept, [0, 2, 5])
      // Hidden states are b + k·w for every token (b = e0 − e1, w ⟂ b unit): b, b+2w, b+4w, b+4.01w.
      const state = (k: number) => [1, -1, k]
      const expectedCosine = [cosine(state(0), state(2)), 1, cosine(state(2), state(4)), 1, cosine(state(4), state(4.01)), 1]
      short.evidence.scores.forEach((s, i) => assert.closeTo(1 - s, expectedCosine[i]!, 1e-5, `cosine of block ${i}`))
      const expectedMse = [4 / 16, 0, 4 / 16, 0, 1e-4 / 16, 0]
      flux.evidence.scores.forEach((s, i) => assert.closeTo(s, expectedMse[i]!, 1e-6, `mse of block ${i}`))
      assert.strictEqual(short.evidence.measure, "1 − cosine similarity of block input and output")
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))
})
