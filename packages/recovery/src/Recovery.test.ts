import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { LatentDataset } from "@tinyfusion/data"
import { Trainer, Training } from "@tinyfusion/diffusion"
import { type Config, DiT, Fixtures, Init } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as Alignment from "./Alignment.ts"
import * as Recovery from "./Recovery.ts"

const teacherConfig: Config.Config = { ...Fixtures.tiny, hiddenSize: 32, depth: 4 }

/**
 * A teacher whose blocks do something: the reference init zeroes every
 * adaLN output (each block starts as the identity) and the final layer, so
 * those get N(0, 0.1) here.
 */
const teacherHost = (): HostTensor.HostTree =>
  ParamTree.map(Init.host(teacherConfig, 0), HostTensor.isHostTensor, (t, key) =>
    t.data.every((v) => v === 0) && key !== "pos_embed"
      ? HostTensor.float32(t.shape, Rng.normal(Rng.stream(5, `test/teacher/${key}`), 0, t.data.length).map((v) => 0.1 * v))
      : t) as HostTensor.HostTree

const fixedBatch = (seed: number) => ({
  latents: Rng.normal(Rng.stream(seed, "test/latents"), 0, 8 * 32),
  labels: Int32Array.from([0, 1, 2, 0, 1, 2, 0, 1]),
  shape: [8, 4, 4, 2] as const,
  mirrored: []
})

/** The same batch at every step: the draws still change with the step. */
const oneBatch = Layer.succeed(LatentDataset, LatentDataset.of({
  count: 8,
  classes: 3,
  latentShape: [4, 4, 2],
  scale: 1,
  batch: () => fixedBatch(0)
}))

const settings: Trainer.Settings = { ...Recovery.paperTraining(200, 8, 0), lr: 3e-3, lrFloor: 1e-3, emaDecay: 0.9 }

/** The batch of step 0 with its draws, on the device. */
const batchAt = (task: Trainer.Task, step: number) =>
  Effect.gen(function*() {
    return Trainer.batchAt(yield* LatentDataset, settings, task, step)
  })

const read = (terms: Readonly<Record<string, tf.Scalar>>) =>
  Object.fromEntries(Object.entries(terms).map(([k, t]) => [k, t.dataSync()[0]!]))

/** A strategy's task on these models with its options as a config gives them (defaults for the rest). */
const taskOf = <O>(
  strategy: Recovery.Strategy<O>,
  given: Record<string, unknown>,
  setup: { readonly steps: number; readonly models: Recovery.Models }
) => Effect.flatMap(Recovery.options(strategy, given), (options) => strategy.task({ ...setup, options }))

/** Models of these depths (for alignment checks; no weights). */
const depths = (student: number, teacher: number, blocks?: Recovery.Models["student"]["blocks"]): Recovery.Models =>
  Recovery.ditModels({ _tag: "sit" }, { config: { ...teacherConfig, depth: teacher }, params: {}, key: "teacher-key" }, {
    config: { ...teacherConfig, depth: student },
    init: {},
    blocks
  })

describe("recovery objective", () => {
  it.effect("student = teacher, nothing pruned: every KD term is exactly 0 at step 0 (DiT and SiT)", () =>
    Effect.gen(function*() {
      const host = teacherHost()
      const identity = Alignment.fromDecision([0, 1, 2, 3], 4)
      assert.deepStrictEqual(identity.map((p) => [p.student, p.teacher]), [[0, 0], [1, 1], [2, 2], [3, 3]])
      for (const family of ["dit", "sit"] as const) {
        const objective = yield* Trainer.objective(family, teacherConfig)
        const teacher = { config: teacherConfig, params: HostTensor.treeToTensors(host), key: "teacher-key" }
        const student = HostTensor.treeToTensors(host)
        const models = Recovery.ditModels(objective, teacher, { config: teacherConfig, init: host })
        const alignment = { kept: [0, 1, 2, 3] }
        const cases: ReadonlyArray<readonly [Recovery.Strategy, Record<string, unknown>]> = [
          [Recovery.logitsKd, {}],
          [Recovery.repKd, { alignment }],
          [Recovery.maskedKd, { alignment, k: 2 }],
          [Recovery.maskedKd, { alignment, k: 0.5 }]
        ]
        for (const [strategy, options] of cases) {
          const task = yield* taskOf(strategy, options, { steps: 100, models })
          const batch = yield* batchAt(task, 0)
          const out = task.loss(batch)(student)
          const terms = read(out.terms)
          assert.strictEqual(terms["kd"], 0, `${family} ${strategy.name} kd`)
          if (strategy !== Recovery.logitsKd) assert.strictEqual(terms["rep"], 0, `${family} ${strategy.name} rep`)
          assert.isAbove(terms["gt"]!, 0)
          // What is left is α_GT·GT.
          assert.closeTo(out.loss.dataSync()[0]!, 0.1 * terms["gt"]!, 1e-6 * terms["gt"]!)
          tf.dispose([batch.x, out.loss, ...Object.values(out.terms)])
        }
        ParamTree.dispose([teacher.params, student])
      }
    }).pipe(Effect.provide(oneBatch), Effect.provide(Compute.wasm)))

  it.effect("β decays linearly to 0 as configured and weighs Rep in the loss", () =>
    Effect.gen(function*() {
      const objective = yield* Trainer.objective("dit", teacherConfig)
      const host = teacherHost()
      const teacher = { config: teacherConfig, params: HostTensor.treeToTensors(host), key: "teacher-key" }
      const pruned = DiT.keepBlocks(teacherConfig, teacher.params, [1, 2])
      const models = Recovery.ditModels(objective, teacher, { config: pruned.config, init: host })
      // The paper's β: 1e-2 for DiT, 2e-4 for SiT.
      const dit = Recovery.beta(models.paperBeta, 100)
      assert.deepStrictEqual([0, 25, 50, 100, 120].map(dit), [1e-2, 7.5e-3, 5e-3, 0, 0])
      assert.strictEqual(depths(2, 4).paperBeta, 2e-4)
      assert.strictEqual(Recovery.beta(0.5, 4)(1), 0.375)

      const alignment = { kept: [1, 2], groups: [[0, 1], [2, 3]] }
      const pairs = yield* Recovery.pairs(alignment, models)
      assert.deepStrictEqual(pairs.map((p) => [p.student, p.teacher]), [[0, 1], [1, 3]])
      const task = yield* taskOf(Recovery.repKd, { alignment }, { steps: 100, models })
      for (const step of [0, 50, 100]) {
        const batch = yield* batchAt(task, step)
        const out = task.loss(batch)(pruned.params)
        const t = read(out.terms)
        assert.isAbove(t["rep"]!, 0)
        const expected = 0.9 * t["kd"]! + 0.1 * t["gt"]! + dit(step) * t["rep"]!
        assert.closeTo(out.loss.dataSync()[0]!, expected, 1e-5 * expected)
        tf.dispose([batch.x, out.loss, ...Object.values(out.terms)])
      }
      ParamTree.dispose(teacher.params)
    }).pipe(Effect.provide(oneBatch), Effect.provide(Compute.wasm)))

  it.effect("alignment errors name what does not fit", () =>
    Effect.gen(function*() {
      const fixed = yield* Effect.flip(Recovery.pairs("fixed", depths(3, 8)))
      assert.match(fixed.message, /teacher depth 8 to be a multiple of the student depth 3/)
      const count = yield* Effect.flip(Recovery.pairs({ kept: [0, 2] }, depths(3, 8)))
      assert.match(count.message, /2 kept blocks for a student of depth 3/)
      const order = yield* Effect.flip(Recovery.pairs({ kept: [0, 9, 2] }, depths(3, 8)))
      assert.match(order.message, /kept blocks \[0,9,2\] are not ascending within 0\.\.7/)
      // The decision that made the student aligns it only with the teacher it was cut from.
      const blocks = (source: string) => ({ source, teacherDepth: 4, kept: [1, 2], groups: [[0, 1], [2, 3]] })
      const ok = yield* Recovery.pairs("decision", depths(2, 4, blocks("teacher-key")))
      assert.deepStrictEqual(ok.map((p) => [p.student, p.teacher]), [[0, 1], [1, 3]])
      const none = yield* Effect.flip(Recovery.pairs("decision", depths(2, 4)))
      assert.match(none.message, /the student records no blocks of a teacher/)
      const other = yield* Effect.flip(Recovery.pairs("decision", depths(2, 4, blocks("another-key"))))
      assert.match(other.message, /made of blocks of another-key, not of the teacher teacher-key: use the fixed alignment/)
    }))

  it.effect("a student pruned from the teacher lowers its KD losses on a fixed batch over 200 masked-KD steps", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const host = teacherHost()
      const objective = yield* Trainer.objective("dit", teacherConfig)
      const teacher = { config: teacherConfig, params: HostTensor.treeToTensors(host), key: "teacher-key" }
      const kept = [1, 2]
      const pruned = DiT.keepBlocks(teacherConfig, host, kept)
      const init = pruned.params
      // Distillation alone: the ground-truth term would pull towards this batch's data rather than the teacher.
      const options = { alphaKd: 1, alphaGt: 0, k: 2, alignment: { kept, groups: [[0, 1], [2, 3]] } }
      const task = yield* taskOf(Recovery.maskedKd, options, { steps: settings.steps, models: Recovery.ditModels(objective, teacher, { config: pruned.config, init }) })
      /** KD and Rep of some params on the batch and draws of step 0. */
      const measure = (params: ParamTree.ParamTree) =>
        compute.scoped(Effect.gen(function*() {
          const out = task.loss(yield* batchAt(task, 0))(params)
          return read(out.terms)
        }))
      let state = Training.init(HostTensor.treeToTensors(init))
      const before = yield* measure(state.params)
      const memory = (yield* compute.memory).tensors
      for (let step = 0; step < settings.steps; step++) {
        const next = yield* compute.scoped(Trainer.step(settings, task, state, step))
        Training.dispose(state)
        state = next.state
        assert.strictEqual((yield* compute.memory).tensors, memory)
      }
      const after = yield* measure(state.params)
      assert.isBelow(after["kd"]!, before["kd"]! / 10, `kd ${before["kd"]} → ${after["kd"]}`)
      assert.isBelow(after["rep"]!, before["rep"]! / 2, `rep ${before["rep"]} → ${after["rep"]}`)
      Training.dispose(state)
      ParamTree.dispose(teacher.params)
    }).pipe(Effect.provide(oneBatch), Effect.provide(Compute.wasm)), 60_000)
})
