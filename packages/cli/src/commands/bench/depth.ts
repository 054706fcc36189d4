/**
 * `bench depth`: the speed-up of depth pruning against width pruning (the
 * paper's Fig. 4): sampling it/s of the mini teacher's shape at depths 28,
 * 21, 14 and 7, and of its width-pruned shapes (Diff-Pruning's uniform
 * widths, Width.forRatio) at the same shares of parameters removed, each
 * against the full shape and against the linear speed-up (parameters of the
 * full shape / parameters) that removing parameters promises. The suite's
 * method (experiments' Speed.measure): the shapes are timed together in
 * interleaved rounds (28, 21, …, 28, 21, …) so that background load falls on
 * every shape alike; it/s is the median over rounds with its distribution-free
 * interval, a speed-up the median of per-round ratios. An iteration is the
 * sampler's guided denoiser on a batch (Throughput.interleaved): the forward
 * of the doubled batch. The process's CPU time per iteration is shown too: on
 * a shared machine it moves less with the load than the wall time does
 * (tfjs's wasm backend runs on one thread).
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Sampling, Throughput } from "@tinyfusion/eval"
import { Speed } from "@tinyfusion/experiments"
import { Config } from "@tinyfusion/models"
import { Width } from "@tinyfusion/pruning"
import { Compute } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend, fusedFlag, kernelNote, nativeGemmFlag, withFused, withNativeGemm } from "./compute.ts"

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
    rounds: CheckedFlags.count("rounds").pipe(
      Flag.withDefault(9),
      Flag.withDescription("Interleaved rounds, one timed pass of every shape each (6 or more reach a 95% interval)")
    ),
    fused: fusedFlag,
    nativeGemm: nativeGemmFlag,
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const depths = o.depths
      const ratios = o.widths
      const sampling = yield* Schema.decodeUnknownEffect(Sampling.Options)({ sampler: "ddpm", steps: "250", cfgScale: o.cfg, guidedChannels: "first-3", seed: 0 })
      const full = yield* Config.make("mini", { hiddenSize: o.hidden, depth: depths[0]! })
      const shapes = [
        ...(yield* Effect.forEach(depths, (d) => Config.make("mini", { hiddenSize: o.hidden, depth: d }))).map((model) => ({
          label: `depth ${model.depth}`,
          model
        })),
        ...ratios.map((ratio) => {
          const c = Width.forRatio(full, ratio).config
          return { label: `width ${c.hiddenSize}, ${c.numHeads}×${Config.headDim(c)} heads, MLP ${Config.mlpHidden(c)}`, model: c }
        })
      ]
      yield* Console.log(
        `Sampling it/s by shape: ${Config.describe(full)}, its depths and width-pruned shapes, batch ${o.batch}` +
          `${o.cfg > 1 ? ` (forward ${2 * o.batch}, guidance ${o.cfg})` : ""}; ${o.rounds} interleaved rounds after one untimed pass each; ` +
          `median [its order-statistic interval]`
      )
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        withNativeGemm(o.nativeGemm, withFused(o.fused, Effect.gen(function*() {
          const c = yield* Compute
          const measured = yield* Speed.measure(shapes.map((s) => ({ family: "dit" as const, model: s.model })), sampling, {
            batch: o.batch,
            warmup: 1,
            rounds: o.rounds
          })
          const base = measured[0]!
          for (const [i, t] of measured.entries()) {
            const up = Throughput.speedup(t.itPerS, base.itPerS)
            const linear = base.parameters / t.parameters
            rows.push([
              name,
              shapes[i]!.label,
              `${Table.fixed((100 * t.parameters) / base.parameters, 1)}%`,
              t.parameters.toLocaleString("en-US"),
              `${Table.fixed(t.median, 3)} [${Table.fixed(t.lo, 3)}, ${Table.fixed(t.hi, 3)}]`,
              `${Table.fixed(up.value, 2)}× [${Table.fixed(up.lo, 2)}, ${Table.fixed(up.hi, 2)}]`,
              Table.fixed(t.cpuMs, 1),
              `${Table.fixed(base.cpuMs / t.cpuMs, 2)}×`,
              `${Table.fixed(linear, 2)}×`,
              `${Table.fixed((100 * up.value) / linear, 1)}%`,
              `${(100 * t.level).toFixed(1)}%`
            ])
          }
          yield* Console.log(`${name}: ${c.device}${kernelNote(o)}`)
        }))))
      yield* Console.log(Table.render(
        ["backend", "shape", "parameters kept", "parameters", "it/s", "speed-up", "cpu ms/it", "speed-up (cpu)", "linear", "of linear", "interval level"],
        rows
      ))
    })
).pipe(Command.withDescription(
  "Sampling it/s of the mini teacher's shape at depths 28, 21, 14, 7 and width-pruned to the same parameters, timed in interleaved rounds, against the linear speed-up (paper Fig. 4)"
))
