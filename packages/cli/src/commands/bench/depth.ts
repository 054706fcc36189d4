/**
 * `bench depth`: the speed-up of depth pruning against width pruning (the
 * paper's Fig. 4): sampling it/s of the mini teacher's shape at depths 28,
 * 21, 14 and 7, and of its width-pruned shapes (Diff-Pruning's uniform
 * widths, Width.forRatio) at the same shares of parameters removed, each
 * against the full shape and against the linear speed-up (parameters of the
 * full shape / parameters) that removing parameters promises. An iteration
 * is the sampler's guided denoiser on a batch (Throughput.sampling): the
 * forward of the doubled batch. The shapes are timed in interleaved rounds
 * (28, 21, …, 28, 21, …) so that background load hits them alike; each
 * figure is the median over rounds. The process's CPU time per iteration is
 * shown too: on a shared machine it moves less with the load than the wall
 * time does (tfjs's wasm backend runs on one thread).
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Sampling, Throughput } from "@tinyfusion/eval"
import { Config, Init, ModelArtifact } from "@tinyfusion/models"
import { Width } from "@tinyfusion/pruning"
import { Compute, ParamTree } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend, fusedFlag, withFused } from "./compute.ts"

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

export const depth = Command.make(
  "depth",
  {
    depths: CheckedFlags.counts("depths").pipe(Flag.withDefault([28, 21, 14, 7]), Flag.withDescription("Comma-separated depths; speed-ups are against the first")),
    widths: CheckedFlags.shares("widths").pipe(
      Flag.withDefault([0.25, 0.5, 0.75]),
      Flag.withDescription("Comma-separated shares of parameters removed by width pruning of the first depth's shape (none: no width)")
    ),
    hidden: CheckedFlags.count("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Width of the mini shape (4 heads, patch 2, 8×8×4 latents)")),
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(64), Flag.withDescription("Images per batch (the forward batch is twice this under guidance)")),
    cfg: CheckedFlags.guidance("cfg").pipe(Flag.withDefault(1.5), Flag.withDescription("Guidance scale (above 1 doubles the batch)")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed rounds over every shape at most")),
    budget: CheckedFlags.count("budget-s").pipe(Flag.withDefault(60), Flag.withDescription("Seconds per shape: fewer rounds on slow backends (at least one)")),
    fused: fusedFlag,
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const depths = o.depths
      const ratios = o.widths
      const sampling = yield* Schema.decodeUnknownEffect(Sampling.Options)({ sampler: "ddpm", steps: "250", cfgScale: o.cfg, guidedChannels: "first-3", seed: 0 })
      const full = yield* Config.make("mini", { hiddenSize: o.hidden, depth: depths[0]! })
      const shapes = [
        ...(yield* Effect.forEach(depths, (d) => Config.make("mini", { hiddenSize: o.hidden, depth: d }))).map((config) => ({
          label: `depth ${config.depth}`,
          config
        })),
        ...ratios.map((ratio) => {
          const shape = Width.forRatio(full, ratio)
          const c = shape.config
          return { label: `width ${c.hiddenSize}, ${c.numHeads}×${Config.headDim(c)} heads, MLP ${Config.mlpHidden(c)}`, config: c }
        })
      ]
      yield* Console.log(
        `Sampling it/s by shape: ${Config.describe(full)}, its depths and width-pruned shapes, batch ${o.batch}` +
          `${o.cfg > 1 ? ` (forward ${2 * o.batch}, guidance ${o.cfg})` : ""}; median over interleaved rounds after one untimed`
      )
      const fullParameters = ModelArtifact.parameterCount(full)
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        withFused(o.fused, Effect.gen(function*() {
          const c = yield* Compute
          const models = shapes.map((s) => ({ family: "dit" as const, config: s.config, params: Init.params(s.config, 0) }))
          const timings = yield* Effect.gen(function*() {
            const once = (model: (typeof models)[number]) =>
              Effect.gen(function*() {
                const before = process.cpuUsage()
                const t = yield* Throughput.sampling(model, sampling, { batch: o.batch, warmup: 0, repetitions: 1 })
                const cpu = process.cpuUsage(before)
                return { wall: t.msPerIt, cpu: (cpu.user + cpu.system) / 1000 }
              })
            const first = yield* Effect.forEach(models, once)
            const round = first.reduce((a, b) => a + b.wall, 0)
            const rounds = Math.max(1, Math.min(o.repetitions, Math.floor((o.budget * 1000 * models.length) / round) - 1))
            const ms: Array<Array<{ readonly wall: number; readonly cpu: number }>> = models.map(() => [])
            for (let r = 0; r < rounds; r++) {
              for (const [i, model] of models.entries()) ms[i]!.push(yield* once(model))
            }
            return ms
          }).pipe(Effect.ensuring(Effect.sync(() => models.forEach((m) => ParamTree.dispose(m.params)))))
          const wall = timings.map((ts) => ts.map((t) => t.wall))
          const cpu = timings.map((ts) => median(ts.map((t) => t.cpu)))
          const base = median(wall[0]!)
          shapes.forEach((shape, i) => {
            const ms = median(wall[i]!)
            const parameters = ModelArtifact.parameterCount(shape.config)
            const speedup = base / ms
            const linear = fullParameters / parameters
            rows.push([
              name,
              shape.label,
              `${Table.fixed((100 * parameters) / fullParameters, 1)}%`,
              parameters.toLocaleString("en-US"),
              Table.fixed(ms, 1),
              `${Table.fixed((100 * (Math.max(...wall[i]!) - Math.min(...wall[i]!))) / ms, 0)}%`,
              Table.fixed(1000 / ms, 3),
              `${Table.fixed(speedup, 2)}×`,
              Table.fixed(cpu[i]!, 1),
              `${Table.fixed(cpu[0]! / cpu[i]!, 2)}×`,
              `${Table.fixed(linear, 2)}×`,
              `${Table.fixed((100 * speedup) / linear, 1)}%`,
              String(wall[i]!.length)
            ])
          })
          yield* Console.log(`${name}: ${c.device}${o.fused === "off" ? " (composed ops, no fused kernels)" : ""}`)
        })))
      yield* Console.log(Table.render(
        ["backend", "shape", "parameters kept", "parameters", "ms/it", "range", "it/s", "speed-up", "cpu ms/it", "speed-up (cpu)", "linear", "of linear", "rounds"],
        rows
      ))
    })
).pipe(Command.withDescription(
  "Sampling it/s of the mini teacher's shape at depths 28, 21, 14, 7 and width-pruned to the same parameters, against the linear speed-up (paper Fig. 4)"
))
