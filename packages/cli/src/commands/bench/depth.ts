/**
 * `bench depth`: the speed-up of depth pruning (the paper's Fig. 4): sampling
 * it/s of the mini teacher's shape at depths 28, 21, 14 and 7, each against
 * the first depth and against the linear speed-up (first depth / depth) that
 * removing blocks promises. The suite's method (experiments' Speed.measure):
 * the depths are timed together in interleaved rounds (28, 21, 14, 7, 28, …)
 * so that background load falls on every depth alike; it/s is the median over
 * rounds with its distribution-free interval, a speed-up the median of
 * per-round ratios. An iteration is the sampler's guided denoiser on a batch
 * (Throughput.interleaved): the forward of the doubled batch.
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Sampling, Throughput } from "@tinyfusion/eval"
import { Speed } from "@tinyfusion/experiments"
import { Config } from "@tinyfusion/models"
import { Compute } from "@tinyfusion/tensor"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend } from "./compute.ts"

export const depth = Command.make(
  "depth",
  {
    depths: Flag.String("depths").pipe(Flag.withDefault("28,21,14,7"), Flag.withDescription("Comma-separated depths; speed-ups are against the first")),
    hidden: Flag.Int("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Width of the mini shape (4 heads, patch 2, 8×8×4 latents)")),
    batch: Flag.Int("batch").pipe(Flag.withDefault(64), Flag.withDescription("Images per batch (the forward batch is twice this under guidance)")),
    cfg: Flag.Finite("cfg").pipe(Flag.withDefault(1.5), Flag.withDescription("Guidance scale (above 1 doubles the batch)")),
    rounds: Flag.Int("rounds").pipe(Flag.withDefault(9), Flag.withDescription("Interleaved rounds, one timed pass of every depth each (6 or more reach a 95% interval)")),
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const depths = o.depths.split(",").map((d) => Number(d.trim()))
      const sampling = yield* Schema.decodeUnknownEffect(Sampling.Options)({ sampler: "ddpm", steps: "250", cfgScale: o.cfg, guidedChannels: "first-3", seed: 0 })
      const shapes = yield* Effect.forEach(depths, (d) => Effect.map(Config.make("mini", { hiddenSize: o.hidden, depth: d }), (model) => ({ family: "dit" as const, model })))
      yield* Console.log(
        `Sampling it/s by depth: ${Config.describe(shapes[0]!.model)} at the listed depths, batch ${o.batch}` +
          `${o.cfg > 1 ? ` (forward ${2 * o.batch}, guidance ${o.cfg})` : ""}; ${o.rounds} interleaved rounds after one untimed pass each; ` +
          `median [its order-statistic interval]`
      )
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        Effect.gen(function*() {
          const c = yield* Compute
          const measured = yield* Speed.measure(shapes, sampling, { batch: o.batch, warmup: 1, rounds: o.rounds })
          const base = measured[0]!
          for (const [i, t] of measured.entries()) {
            const up = Throughput.speedup(t.itPerS, base.itPerS)
            const linear = depths[0]! / depths[i]!
            rows.push([
              name,
              String(depths[i]),
              `${Table.fixed((100 * depths[i]!) / depths[0]!, 0)}%`,
              t.parameters.toLocaleString("en-US"),
              `${Table.fixed(t.median, 3)} [${Table.fixed(t.lo, 3)}, ${Table.fixed(t.hi, 3)}]`,
              `${Table.fixed(up.value, 2)}× [${Table.fixed(up.lo, 2)}, ${Table.fixed(up.hi, 2)}]`,
              `${Table.fixed(linear, 2)}×`,
              `${Table.fixed((100 * up.value) / linear, 1)}%`,
              `${(100 * t.level).toFixed(1)}%`
            ])
          }
          yield* Console.log(`${name}: ${c.device}`)
        }))
      yield* Console.log(Table.render(["backend", "depth", "kept", "parameters", "it/s", "speed-up", "linear", "of linear", "interval level"], rows))
    })
).pipe(Command.withDescription("Sampling it/s of the mini teacher's shape at depths 28, 21, 14, 7 on each backend, timed in interleaved rounds, against the linear speed-up (paper Fig. 4)"))
