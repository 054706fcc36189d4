/**
 * `bench train`: milliseconds per step of the shared training loop's step
 * (Trainer.step: batch upload, draws, loss, gradients, clip, AdamW, EMA, one
 * device read) for pre-training the mini teacher and for recovering a
 * student of half its blocks with each strategy (the teacher's forward
 * included), on latents drawn in memory.
 */
import { Console, Effect, Layer } from "effect"
import { Command, Flag } from "effect/cli"
import { LatentDataset } from "@tinyfusion/data"
import { Pretrain, Trainer, Training } from "@tinyfusion/diffusion"
import { Config, DiT, Init } from "@tinyfusion/models"
import { Scheme, Selection } from "@tinyfusion/pruning"
import { Recovery, Strategies } from "@tinyfusion/recovery"
import { Benchmark, Compute, HostTensor, ParamTree, Rng } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend } from "./compute.ts"

/** Random latents and labels, a pure function of (seed, step). */
export const latents = (config: Pick<Config.Config, "inputSize" | "inChannels" | "numClasses">) => {
  const per = config.inputSize * config.inputSize * config.inChannels
  return Layer.succeed(LatentDataset, LatentDataset.of({
    count: 60000,
    classes: config.numClasses,
    latentShape: [config.inputSize, config.inputSize, config.inChannels],
    scale: 1,
    batch: ({ seed, batchSize }, step) => ({
      latents: Rng.normal(Rng.stream(seed, "bench/latents"), step, batchSize * per),
      labels: Rng.integers(Rng.stream(seed, "bench/labels"), step, batchSize, 0, config.numClasses),
      shape: [batchSize, config.inputSize, config.inputSize, config.inChannels],
      mirrored: []
    })
  }))
}

/** Steps of a task from its initial state, the first untimed (kernel set-up). */
export const timeSteps = (settings: Trainer.Settings, task: Trainer.Task, repetitions: number) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    let state = Training.init(HostTensor.treeToTensors(task.init))
    let index = 0
    const once = Effect.gen(function*() {
      const next = yield* compute.scoped(Trainer.step(settings, task, state, index++))
      Training.dispose(state)
      state = next.state
    })
    return yield* Benchmark.time(once, { warmup: 1, repetitions }).pipe(Effect.ensuring(Effect.sync(() => Training.dispose(state))))
  })

export const train = Command.make(
  "train",
  {
    depth: CheckedFlags.count("depth").pipe(Flag.withDefault(28), Flag.withDescription("Teacher depth (mini: 28)")),
    hidden: CheckedFlags.count("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Width (mini: 128)")),
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(32), Flag.withDescription("Latents per step")),
    keep: CheckedFlags.count("keep").pipe(Flag.withDefault(14), Flag.withDescription("Student blocks (kept evenly, 1:2 groups for RepKD)")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed steps per figure")),
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const teacher = yield* Config.make("mini", { depth: o.depth, hiddenSize: o.hidden })
      const kept = [...Selection.uniform(o.depth, o.keep)]
      yield* Console.log(`Trainer.step, median ms per step (${o.repetitions} timed after 1 untimed)\nteacher ${Config.describe(teacher)}; student: blocks ${kept.join(",")}`)
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        Effect.gen(function*() {
          const c = yield* Compute
          const row = (run: string, model: Config.Config, timing: Benchmark.Timing) =>
            rows.push([name, run, `${model.depth}×${model.hiddenSize}`, String(o.batch), Table.fixed(timing.ms, 1), Table.fixed((o.batch * 1000) / timing.ms, 1)])
          const settings: Trainer.Settings = { ...Pretrain.mini.training, batchSize: o.batch }
          const objective = yield* Trainer.objective("dit", teacher)
          const host = Init.host(teacher, 0)
          row("pretrain", teacher, yield* timeSteps(settings, Trainer.diffusionTask(objective, teacher, host), o.repetitions))
          const params = HostTensor.treeToTensors(host)
          yield* Effect.gen(function*() {
            const pruned = DiT.keepBlocks(teacher, host, kept)
            const alignment = { kept, groups: Scheme.groups({ m: 2 }, o.depth).groups }
            const models = Recovery.ditModels(objective, { config: teacher, params, key: "bench" }, { config: pruned.config, init: pruned.params })
            for (const strategy of Strategies.builtin.values()) {
              const options = yield* Recovery.options(strategy, "alignment" in strategy.options.fields ? { alignment } : {})
              const task = yield* strategy.task({ steps: 1000, options, models })
              row(`recovery ${strategy.name}`, pruned.config, yield* timeSteps(Recovery.paperTraining(1000, o.batch, 0), task, o.repetitions))
            }
          }).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(params))))
          yield* Console.log(`${name}: ${c.device}`)
        }).pipe(Effect.provide(latents(teacher))))
      yield* Console.log(Table.render(["backend", "run", "model", "batch", "ms/step", "samples/s"], rows))
    })
).pipe(Command.withDescription("Time the shared training loop's step: pre-training the mini teacher, and recovery (each strategy) of half its blocks"))
