/**
 * `tinyfusion throughput`: the sampling speed of one model on the active
 * backend (`--backend`), as the paper reports it: it/s = sampler iterations
 * (forward passes of the batch through the denoiser, doubled under guidance)
 * per second, after warm-up, the median of repeated timings; images/s for
 * the sampler's evaluations per image; the parameter count. The model: an
 * artifact by key, a checkpoint file, or a preset shape with its reference
 * initialisation (speed does not depend on the weights). Timings are
 * printed, not stored: they belong to the machine, not to the model.
 */
import { Console, Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Config, Init, ModelArtifact } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree } from "@tinyfusion/tensor"
import { Sampling, Throughput } from "@tinyfusion/eval"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as ModelFlags from "../ModelFlags.ts"
import * as Table from "../Table.ts"

const marThroughput = "throughput measures a DiT or SiT's sampling; `pnpm bench mar` times a MAR's"

export const throughput = Command.make(
  "throughput",
  {
    ...ModelFlags.flags,
    preset: Flag.Literals("preset", Config.presetNames).pipe(
      Flag.withDescription("Time a preset shape (reference initialisation) instead of --model-key/--model-file"),
      Flag.optional
    ),
    depth: CheckedFlags.count("depth").pipe(Flag.withDescription("Blocks of the --preset shape (a pruned depth)"), Flag.optional),
    batch: CheckedFlags.count("batch").pipe(Flag.withDescription("Images per batch (the network sees twice as many under guidance)"), Flag.withDefault(64)),
    sampler: Flag.Literals("sampler", ["ddpm", "ddim", "ode", "sde"]).pipe(
      Flag.withDescription("Sampler whose evaluations per image give images/s (default: ddpm for a DiT, ode for a SiT)"),
      Flag.optional
    ),
    steps: Flag.String("steps").pipe(Flag.withDescription("Sampler steps (ddpm/ddim: respacing; ode/sde: grid points)"), Flag.withDefault("250")),
    cfg: CheckedFlags.guidance("cfg").pipe(Flag.withDescription("Guidance scale (above 1 doubles the batch)"), Flag.withDefault(1.5)),
    guidedChannels: Flag.Literals("guided-channels", ["first-3", "all"]).pipe(Flag.withDefault("first-3" as const)),
    weights: Flag.Literals("weights", ["ema", "raw"]).pipe(Flag.withDescription("Weights of a model artifact"), Flag.withDefault("ema" as const)),
    warmup: CheckedFlags.natural("warmup").pipe(Flag.withDescription("Untimed passes first (kernel compilation)"), Flag.withDefault(2)),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDescription("Timed passes (the median is reported)"), Flag.withDefault(10))
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      if (Option.contains(o.family, "mar")) return yield* new ModelFlags.ModelChoice({ reason: marThroughput })
      const family = Option.getOrElse(Option.flatMap(o.family, (f) => (f === "mar" ? Option.none() : Option.some(f))), () => "dit" as const)
      const model = yield* Option.match(o.preset, {
        onSome: (preset) =>
          Effect.gen(function*() {
            if (Option.isSome(o.modelKey) || Option.isSome(o.modelFile)) {
              return yield* new ModelFlags.ModelChoice({ reason: "give --preset or --model-key/--model-file, not both" })
            }
            const config = yield* Config.make(preset, Option.match(o.depth, { onNone: () => ({}), onSome: (depth) => ({ depth }) }))
            return { name: `${preset} (reference init)`, family, config, params: Init.host(config, 0) }
          }),
        onNone: () =>
          Effect.gen(function*() {
            const artifact = yield* ModelFlags.artifact(o)
            const output = artifact.output
            if (output.family === "mar") return yield* new ModelFlags.ModelChoice({ reason: marThroughput })
            const read = yield* ModelArtifact.read({ ...artifact, output }, { ema: o.weights === "ema" })
            return { name: `${artifact.key} (${read.ema ? "ema" : "raw"})`, family: read.family, config: read.config, params: read.params }
          })
      })
      const sampling = yield* Schema.decodeUnknownEffect(Sampling.Options)({
        sampler: Option.getOrElse(o.sampler, () => (model.family === "dit" ? "ddpm" : "ode")),
        steps: o.steps,
        cfgScale: o.cfg,
        guidedChannels: o.guidedChannels,
        seed: 0
      })
      yield* Sampling.check(model, sampling)
      const compute = yield* Compute
      const t = yield* Effect.acquireUseRelease(
        Effect.sync(() => HostTensor.treeToTensors(model.params)),
        (params) => Throughput.sampling({ family: model.family, config: model.config, params }, sampling, o),
        (params) => Effect.sync(() => ParamTree.dispose(params))
      )
      yield* Console.log(`${model.name}: ${Config.describe(model.config)}\n${compute.backend}: ${compute.device}`)
      yield* Console.log(Table.render(
        ["parameters", "batch (forward)", "ms/it", "it/s", `images/s (${sampling.sampler} ${sampling.steps})`, "timed"],
        [[
          t.parameters.toLocaleString("en-US"),
          `${t.batch} (${t.forwardBatch})`,
          Table.fixed(t.msPerIt, 1),
          Table.fixed(t.itPerS, 2),
          Table.fixed(t.imagesPerS, 3),
          String(t.repetitions)
        ]]
      ))
    }))
).pipe(Command.withDescription("Time sampling iterations (it/s), images/s and the parameter count of a model on the active backend"))
