/**
 * `bench depth`: the speed-up of depth pruning (the paper's Fig. 4): sampling
 * it/s of the mini teacher's shape at depths 28, 21, 14 and 7, each against
 * the first depth and against the linear speed-up (first depth / depth) that
 * removing blocks promises. An iteration is the sampler's guided denoiser on
 * a batch (Throughput.sampling): the forward of the doubled batch.
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Sampling, Throughput } from "@tinyfusion/eval"
import { Config, Init } from "@tinyfusion/models"
import { Compute, ParamTree } from "@tinyfusion/tensor"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend, fusedFlag, withFused } from "./compute.ts"

export const depth = Command.make(
  "depth",
  {
    depths: Flag.String("depths").pipe(Flag.withDefault("28,21,14,7"), Flag.withDescription("Comma-separated depths; speed-ups are against the first")),
    hidden: Flag.Int("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Width of the mini shape (4 heads, patch 2, 8×8×4 latents)")),
    batch: Flag.Int("batch").pipe(Flag.withDefault(64), Flag.withDescription("Images per batch (the forward batch is twice this under guidance)")),
    cfg: Flag.Finite("cfg").pipe(Flag.withDefault(1.5), Flag.withDescription("Guidance scale (above 1 doubles the batch)")),
    repetitions: Flag.Int("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed iterations per depth at most")),
    budget: Flag.Int("budget-s").pipe(Flag.withDefault(60), Flag.withDescription("Seconds per depth: fewer timed iterations on slow backends (at least one)")),
    fused: fusedFlag,
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const depths = o.depths.split(",").map((d) => Number(d.trim()))
      const sampling = yield* Schema.decodeUnknownEffect(Sampling.Options)({ sampler: "ddpm", steps: "250", cfgScale: o.cfg, guidedChannels: "first-3", seed: 0 })
      const shape = yield* Config.make("mini", { hiddenSize: o.hidden })
      yield* Console.log(
        `Sampling it/s by depth: ${Config.describe(shape)} at the listed depths, batch ${o.batch}` +
          `${o.cfg > 1 ? ` (forward ${2 * o.batch}, guidance ${o.cfg})` : ""}; median of timed iterations after one untimed`
      )
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        withFused(o.fused, Effect.gen(function*() {
          const c = yield* Compute
          let base: number | undefined
          for (const d of depths) {
            const config = yield* Config.make("mini", { hiddenSize: o.hidden, depth: d })
            const params = Init.params(config, 0)
            const model = { family: "dit" as const, config, params }
            const t = yield* Effect.gen(function*() {
              const first = yield* Throughput.sampling(model, sampling, { batch: o.batch, warmup: 0, repetitions: 1 })
              const repetitions = Math.max(1, Math.min(o.repetitions, Math.floor((o.budget * 1000) / first.msPerIteration) - 1))
              return yield* Throughput.sampling(model, sampling, { batch: o.batch, warmup: 0, repetitions })
            }).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(params))))
            base ??= t.iterationsPerSecond
            const speedup = t.iterationsPerSecond / base
            const linear = depths[0]! / d
            rows.push([
              name,
              String(d),
              `${Table.fixed((100 * d) / depths[0]!, 0)}%`,
              t.parameters.toLocaleString("en-US"),
              Table.fixed(t.msPerIteration, 1),
              Table.fixed(t.iterationsPerSecond, 3),
              `${Table.fixed(speedup, 2)}×`,
              `${Table.fixed(linear, 2)}×`,
              `${Table.fixed((100 * speedup) / linear, 1)}%`,
              String(t.repetitions)
            ])
          }
          yield* Console.log(`${name}: ${c.device}${o.fused === "off" ? " (composed ops, no fused kernels)" : ""}`)
        })))
      yield* Console.log(Table.render(
        ["backend", "depth", "kept", "parameters", "ms/it", "it/s", "speed-up", "linear", "of linear", "timed"],
        rows
      ))
    })
).pipe(Command.withDescription("Sampling it/s of the mini teacher's shape at depths 28, 21, 14, 7 on each backend, against the linear speed-up (paper Fig. 4)"))
