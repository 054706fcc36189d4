/**
 * `bench prune`: one mask-learning step of TinyFusion's learnable pruning
 * (Gumbel sampling, gated forward, diffusion loss, gradients of the gate
 * logits and ΔW, clip, AdamW, EMA) on the mini teacher's shape, per backend;
 * the same step function the prune stage runs.
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { GaussianDiffusion } from "@tinyfusion/diffusion"
import { Config, Init } from "@tinyfusion/models"
import { BlockStack, Learnable, LatentSource, Scheme } from "@tinyfusion/pruning"
import { Benchmark, Compute, ParamTree, Rng } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend } from "./compute.ts"

/** Times `repetitions` consecutive steps of a session after one untimed step, releasing each replaced state. */
const stepTiming = (config: Config.Config, options: Learnable.Options, scheme: Scheme.Scheme, repetitions: number) =>
  Effect.gen(function*() {
    const objective = { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() } as const
    const stack = BlockStack.dit(objective, config)
    const params = Init.params(config, 0)
    const count = options.batchSize
    const shape = [count, config.inputSize, config.inputSize, config.inChannels] as const
    const latents = Rng.normal(Rng.stream(0, "bench/latents"), 0, shape.reduce((a, b) => a * b, 1))
    const source = LatentSource.fromArrays(latents, Int32Array.from({ length: count }, (_, i) => i % config.numClasses), shape)
    const run = yield* Learnable.session({ stack, params, scheme, options: { ...options, iterations: repetitions + 1 }, seed: 0, source })
    let state = yield* run.init
    let index = 0
    const once = Effect.gen(function*() {
      const next = yield* run.step(state, index++)
      const kept = new Set(ParamTree.leaves(next.state.tensors))
      for (const t of ParamTree.leaves(state.tensors)) if (!kept.has(t)) t.dispose()
      state = next.state
    })
    return yield* Benchmark.time(once, { warmup: 1, repetitions }).pipe(
      Effect.ensuring(Effect.sync(() => ParamTree.dispose([state.tensors, params])))
    )
  })

export const prune = Command.make(
  "prune",
  {
    depth: CheckedFlags.count("depth").pipe(Flag.withDefault(28), Flag.withDescription("Teacher depth (mini: 28)")),
    hidden: CheckedFlags.count("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Teacher width (4 heads, 8×8×4 latents, patch 2)")),
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(64), Flag.withDescription("Mask-learning batch")),
    scheme: CheckedFlags.scheme("scheme").pipe(Flag.withDefault("1:2"), Flag.withDescription("N:M scheme")),
    updates: CheckedFlags.namesOf("updates", ["lora", "frozen", "full"]).pipe(Flag.withDefault(["lora", "frozen", "full"]), Flag.withDescription("Comma-separated ΔW kinds to time")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed steps per figure")),
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const config = yield* Config.make("mini", { depth: o.depth, hiddenSize: o.hidden })
      const scheme = Scheme.parse(o.scheme)
      yield* Console.log(
        `Mask-learning step (${Scheme.format(scheme)}, batch ${o.batch}), median ms/step\nteacher = ${Config.describe(config)}`
      )
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        Effect.gen(function*() {
          const c = yield* Compute
          for (const update of o.updates) {
            const options = yield* Schema.decodeUnknownEffect(Learnable.Options)({ update, batchSize: o.batch })
            const t = yield* stepTiming(config, options, scheme, o.repetitions)
            rows.push([name, update, Table.fixed(t.ms, 1), Table.fixed((o.batch * 1000) / t.ms, 1), String(t.repetitions)])
          }
          yield* Console.log(`${name}: ${c.device}`)
        }))
      yield* Console.log(Table.render(["backend", "ΔW", "ms/step", "samples/s", "steps timed"], rows))
    })
).pipe(Command.withDescription("Time one mask-learning step of the learnable pruner on the mini teacher's shape, per backend and ΔW"))
