import { NodeServices } from "@effect/platform-node"
import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { type Config, ModelArtifact } from "@tinyfusion/models"
import { type BackendName, Compute, HostTensor, ParamTree, WebGpuFixture } from "@tinyfusion/tensor"
import * as BlockStack from "./BlockStack.ts"
import * as DiffPruning from "./DiffPruning.ts"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as PruneStage from "./PruneStage.ts"
import * as Width from "./Width.ts"

const env = Layer.mergeAll(NodeServices.layer, Compute.wasm, Logger.layer([]))

/** Width 16, 4 heads of 4, MLP 32, two blocks. */
const config: Config.Config = { ...Fixtures.tiny(2), numHeads: 4 }

/** Four channels of each stream, one head and eight MLP channels of every block: a quarter of every width. */
const zeroed: Width.Kept = {
  hidden: [1, 6, 7, 12],
  conditioning: [0, 2, 9, 15],
  timestep: [3, 4, 10, 11],
  heads: [[2], [0]],
  mlp: [[0, 1, 2, 3, 20, 21, 22, 23], [4, 8, 12, 16, 24, 27, 28, 31]]
}

const complement = (all: Width.Kept, drop: Width.Kept): Width.Kept => {
  const without = (xs: ReadonlyArray<number>, d: ReadonlyArray<number>) => xs.filter((x) => !d.includes(x))
  return {
    hidden: without(all.hidden, drop.hidden),
    conditioning: without(all.conditioning, drop.conditioning),
    timestep: without(all.timestep, drop.timestep),
    heads: all.heads.map((h, l) => without(h, drop.heads[l]!)),
    mlp: all.mlp.map((m, l) => without(m, drop.mlp[l]!))
  }
}

/** The ratio whose nearest shape keeps 12 of the 16 channels (and 3 heads, 24 MLP channels). */
const ratio = 1 - ModelArtifact.parameterCount(Width.narrowed(config, 12)) / ModelArtifact.parameterCount(config)

const threshold = 0.5

/** The constructed teacher, its latents and Diff-Pruning's decision, on the current store and backend. */
const pruneTeacher = Effect.gen(function*() {
  const teacher = yield* Stage.run(Fixtures.Teacher, { family: "dit", config, weights: { random: 3, zeroed } }, {})
  const data = yield* Stage.run(Fixtures.Latents, { count: 8, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
  const pruned = yield* Fixtures.prune({
    method: "diff-pruning",
    keep: 2,
    seed: 0,
    calibration: 8,
    options: { ratio, stride: 100, threshold, batchSize: 4, checkpointEvery: 3 }
  }, { teacher, data })
  return { teacher, data, pruned }
})

/** The decision and the importance of every unit, pruned on `backend`. */
const pruneOn = (backend: BackendName) =>
  Effect.gen(function*() {
    const { pruned } = yield* pruneTeacher
    return { decision: yield* Fixtures.decision(pruned, DiffPruning.Evidence), importance: yield* pruned.tensorMap("importance.safetensors") }
  }).pipe(
    Effect.provide(ArtifactStore.layerTemp),
    Effect.provide(Layer.mergeAll(NodeServices.layer, Compute.layer(backend), Logger.layer([])))
  )

describe("Diff-Pruning", () => {
  it.live("removes exactly the units that are zero; the export is the teacher cut to the rest, a DiT recording its widths", () =>
    Effect.gen(function*() {
      const { teacher, data, pruned } = yield* pruneTeacher
      const decision = yield* Fixtures.decision(pruned, DiffPruning.Evidence)
      const { cut, sweep } = decision.evidence
      assert.deepStrictEqual(decision.kept, [0, 1])
      assert.deepStrictEqual(cut.kept, complement(Width.all(config), zeroed))
      assert.strictEqual(cut.share, 0.75)
      // The narrower DiT's parameters are in the cut (no headline figure: the cell's metrics are the scores).
      assert.strictEqual(cut.parameters, ModelArtifact.parameterCount(Width.narrowed(config, 12)))
      assert.deepStrictEqual(pruned.output.headline, {})
      // The sweep: chain steps 0, 100, …, ending at the first loss below threshold × the largest before it.
      assert.deepStrictEqual(sweep.steps, sweep.losses.map((_, i) => 100 * i))
      assert.isBelow(sweep.steps.length, 10, "the threshold ended the sweep")
      sweep.losses.forEach((loss, i) => {
        const largest = Math.max(...sweep.losses.slice(0, i + 1))
        if (i < sweep.losses.length - 1) assert.isAtLeast(loss, threshold * largest, `step ${sweep.steps[i]}`)
        else assert.isBelow(loss, threshold * largest)
      })
      assert.isTrue(Number.isFinite(decision.calibrationLoss))
      const importance = yield* pruned.tensorMap("importance.safetensors")
      assert.deepStrictEqual(importance.get("heads")!.shape, [2, 4])
      assert.strictEqual(importance.get("heads")!.data[2], 0)
      assert.strictEqual(importance.get("mlp")!.data[32 + 31], 0)
      // The stored importance is Taylor's of the gradients summed over the sweep's timesteps, taken one by one here.
      const host = (yield* PruneStage.readModel(teacher)).params
      const params = HostTensor.treeToTensors(host)
      const objective = yield* BlockStack.objective("dit", config)
      const stack = BlockStack.dit(objective, config)
      const source = yield* Stages.readLatents(data)
      const set = stack.calibrationSet(source.batch({ seed: 0, batchSize: 8 }, 0), 0)
      const sum = new Map<string, Float64Array>()
      for (const step of sweep.steps) {
        const at = yield* DiffPruning.gradientAt(stack, params, set, step, 8)
        for (const [k, g] of ParamTree.flatten(yield* HostTensor.treeFromTensors(at.grads), HostTensor.isHostTensor)) {
          const into = sum.get(k) ?? new Float64Array(g.data.length)
          g.data.forEach((v, i) => (into[i] += v))
          sum.set(k, into)
        }
        ParamTree.dispose(at.grads)
      }
      ParamTree.dispose(params)
      const weights = new Map(ParamTree.flatten(host, HostTensor.isHostTensor))
      const grads = new Map([...sum].map(([k, v]) => [k, HostTensor.float32(weights.get(k)!.shape, Float32Array.from(v))] as const))
      const taylor = Width.taylor(config, weights, grads)
      const stored = (name: string) => importance.get(name)!.data
      taylor.hidden.forEach((v, j) => assert.closeTo(stored("hidden")[j]!, v, 1e-4 * Math.max(...taylor.hidden), `hidden ${j}`))
      taylor.mlp.flatMap((m) => [...m]).forEach((v, i) => assert.closeTo(stored("mlp")[i]!, v, 1e-4 * Math.max(...taylor.mlp[0]!), `mlp ${i}`))

      const exported = yield* Stage.run(PruneStage.ExportStage, {}, { decision: pruned, teacher })
      assert.deepStrictEqual(exported.output.config, { ...config, hiddenSize: 12, numHeads: 3, headDim: 4, mlpHidden: 24 })
      assert.strictEqual(exported.output.parameters, cut.parameters)
      const student = yield* PruneStage.readModel(exported)
      const expected = Width.narrow(config, host, cut.kept).params
      const got = new Map(ParamTree.flatten(student.params, HostTensor.isHostTensor))
      for (const [key, t] of ParamTree.flatten(expected, HostTensor.isHostTensor)) assert.isTrue(HostTensor.bitEqual(got.get(key)!, t), key)
      assert.deepStrictEqual(got.get("blocks.1.attn.qkv.weight")!.shape, [36, 12])
      assert.deepStrictEqual(got.get("blocks.1.mlp.fc2.weight")!.shape, [12, 24])
      // The pruned model's calibration loss is the narrow model's: pruning it "again" at ratio 0 keeps it whole.
      const again = yield* Fixtures.prune({
        method: "diff-pruning",
        keep: 2,
        seed: 0,
        calibration: 8,
        options: { ratio: 0, stride: 500, threshold: 0 }
      }, { teacher: exported, data })
      assert.strictEqual(again.output.calibrationLoss, decision.calibrationLoss)
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))

  it.live("refuses a depth target and options without a ratio, naming them; runs on SiT", () =>
    Effect.gen(function*() {
      const teacher = yield* Stage.run(Fixtures.Teacher, { family: "sit", config, weights: { random: 4 } }, {})
      const data = yield* Stage.run(Fixtures.Latents, { count: 4, shape: [4, 4, 4], classes: 3, seed: 0 }, {})
      const run = (keep: number, options: Record<string, number>) =>
        Fixtures.prune({ method: "diff-pruning", keep, seed: 0, calibration: 4, options }, { teacher, data })
      const shallower = yield* Effect.flip(run(1, { ratio: 0.5 }))
      assert.match(shallower.message, /keeps every block: give keep 2/)
      const noRatio = yield* Effect.flip(run(2, { stride: 10 }))
      assert.match(noRatio.message, /invalid options for pruner diff-pruning.*ratio/)
      const sit = yield* run(2, { ratio: 0.5, stride: 250, threshold: 0 })
      const decision = yield* Fixtures.decision(sit, DiffPruning.Evidence)
      assert.deepStrictEqual(decision.evidence.sweep.steps, [0, 250, 500, 750])
      assert.isTrue(Number.isFinite(decision.calibrationLoss))
    }).pipe(Effect.provide(ArtifactStore.layerTemp)).pipe(Effect.provide(env)))

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.live("the same units removed after the same sweep; every unit's importance within float32 rounding of wasm's", () =>
      Effect.gen(function*() {
        const wasm = yield* pruneOn("wasm")
        const gpu = yield* pruneOn("webgpu")
        const [g, w] = [gpu.decision.evidence, wasm.decision.evidence]
        assert.deepStrictEqual(g.cut.kept, complement(Width.all(config), zeroed))
        assert.deepStrictEqual(g.sweep.steps, w.sweep.steps)
        g.sweep.losses.forEach((l, i) => assert.closeTo(l, w.sweep.losses[i]!, 1e-5 * w.sweep.losses[i]!))
        for (const [name, t] of wasm.importance) {
          const scale = Math.max(...t.data)
          t.data.forEach((v, j) => assert.closeTo(gpu.importance.get(name)!.data[j]!, v, 1e-4 * scale, `${name}[${j}]`))
        }
      }), 120_000)
  })
})
