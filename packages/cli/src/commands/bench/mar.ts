/**
 * `bench mar`: MAR against the DiT of the same size — the same blocks (depth
 * and width), tokens and latents — on each backend: milliseconds per
 * training step (Trainer.step on the shared loop) and sampling speed (DiT:
 * the guided denoiser's forward per DDPM step, images/s over `--ddpm-steps`;
 * MAR: a whole guided sample of a batch — `--iterations` network forwards and
 * the DiffLoss head over its generation steps — and the forward alone).
 */
import { Console, Effect, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { DiffLoss, MarTraining, Pretrain, Trainer } from "@tinyfusion/diffusion"
import { MarSampling, Sampling, Throughput } from "@tinyfusion/eval"
import { Config, Init, Mar, MarStateDict, MarConfig, ModelArtifact } from "@tinyfusion/models"
import { Benchmark, Compute, HostTensor, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend } from "./compute.ts"
import { latents, timeSteps } from "./train.ts"

export const mar = Command.make(
  "mar",
  {
    depth: CheckedFlags.count("depth").pipe(Flag.withDefault(32), Flag.withDescription("Blocks (MAR: half encoder, half decoder; mini MAR-L: 32)")),
    hidden: CheckedFlags.count("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Width of both (4 heads)")),
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(32), Flag.withDescription("Latents per training step and images per sampling batch")),
    iterations: CheckedFlags.count("iterations").pipe(Flag.withDefault(16), Flag.withDescription("MAR's autoregressive steps per sample")),
    ddpmSteps: CheckedFlags.count("ddpm-steps").pipe(Flag.withDefault(250), Flag.withDescription("DiT's DDPM steps per sample")),
    cfg: CheckedFlags.guidance("cfg").pipe(Flag.withDefault(1.5), Flag.withDescription("Guidance scale of both (above 1 doubles the network batch)")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(3), Flag.withDescription("Timed repetitions per figure")),
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const dit = yield* Config.make("mini", { depth: o.depth, hiddenSize: o.hidden })
      const half = Math.floor(o.depth / 2)
      const marConfig = yield* MarConfig.make("mini", {
        encoderDepth: half,
        decoderDepth: o.depth - half,
        encoderEmbedDim: o.hidden,
        decoderEmbedDim: o.hidden
      })
      const ddpm = yield* Schema.decodeUnknownEffect(Sampling.Options)({ sampler: "ddpm", steps: String(o.ddpmSteps), cfgScale: o.cfg, guidedChannels: "first-3", seed: 0 })
      const marSampling: MarSampling.Options = { iterations: o.iterations, cfgScale: o.cfg, cfgSchedule: "linear", temperature: 1, seed: 0 }
      yield* Console.log(
        `MAR vs DiT of the same size, median of ${o.repetitions} timed after one untimed\n` +
          `DiT ${Config.describe(dit)}, ${ModelArtifact.parameterCount(dit).toLocaleString("en-US")} parameters\n` +
          `MAR ${MarConfig.describe(marConfig)}, ${MarStateDict.parameterCount(marConfig).toLocaleString("en-US")} parameters\n` +
          `sampling: DiT ${o.ddpmSteps} DDPM steps; MAR ${o.iterations} steps, head ${marConfig.numSamplingSteps} steps; guidance ${o.cfg}`
      )
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        Effect.gen(function*() {
          const c = yield* Compute
          const settings: Trainer.Settings = { ...Pretrain.mini.training, batchSize: o.batch, maxGradNorm: 3 }
          const objective = yield* Trainer.objective("dit", dit)
          const ditStep = yield* timeSteps(settings, Trainer.diffusionTask(objective, dit, Init.host(dit, 0)), o.repetitions)
          const diffloss = yield* DiffLoss.make(marConfig.numSamplingSteps)
          const marHost = MarStateDict.init(marConfig, 0)
          const marStep = yield* timeSteps(settings, MarTraining.task(diffloss, marConfig, marHost), o.repetitions)

          const ditParams = Init.params(dit, 0)
          const ditSampling = yield* Throughput.sampling({ family: "dit", config: dit, params: ditParams }, ddpm, {
            batch: o.batch,
            warmup: 1,
            repetitions: o.repetitions
          }).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(ditParams))))

          // MAR's head has zero output layers at init: give every weight a small offset so its samples are not degenerate.
          const marParams = ParamTree.mapTensors(HostTensor.treeToTensors(marHost), (t) => tf.add(t, 0.01)) as ParamTree.ParamTree
          const sampler = yield* MarSampling.make(marConfig, marSampling)
          const labels = Array.from({ length: o.batch }, (_, i) => i % marConfig.numClasses)
          const model = { config: marConfig, params: marParams }
          const marTimes = yield* Effect.gen(function*() {
            const whole = yield* Benchmark.time(c.scoped(Effect.gen(function*() {
              yield* c.read(tf.slice(sampler.sample(model, 0, labels), [0, 0, 0, 0], [1, 1, 1, 1]))
            })), { warmup: 1, repetitions: o.repetitions })
            const tokens = Rng.normalTensor(Rng.stream(0, "bench/mar"), 0, [2 * o.batch, MarConfig.tokens(marConfig), MarConfig.tokenDim(marConfig)])
            const mask = Mar.maskByOrder(Int32Array.from({ length: 2 * o.batch * MarConfig.tokens(marConfig) }, (_, i) => i % MarConfig.tokens(marConfig)), 2 * o.batch, MarConfig.tokens(marConfig), MarConfig.tokens(marConfig) / 2)
            const forward = yield* Benchmark.time(c.scoped(Effect.gen(function*() {
              const z = Mar.infer(marConfig, marParams, { tokens: tokens as tf.Tensor3D, mask, labels: [...labels, ...labels] })
              yield* c.read(tf.slice(z, [0, 0, 0], [1, 1, 1]))
            })), { warmup: 1, repetitions: o.repetitions }).pipe(Effect.ensuring(Effect.sync(() => tokens.dispose())))
            return { whole, forward }
          }).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(marParams))))

          const ditImages = ditSampling.imagesPerS
          const marImages = (o.batch * 1000) / marTimes.whole.ms
          rows.push([name, "DiT", Table.fixed(ditStep.ms, 1), Table.fixed(ditSampling.msPerIt, 1), Table.fixed((1000 * o.batch) / ditImages, 0), Table.fixed(ditImages, 3)])
          rows.push([name, "MAR", Table.fixed(marStep.ms, 1), Table.fixed(marTimes.forward.ms, 1), Table.fixed(marTimes.whole.ms, 0), Table.fixed(marImages, 3)])
          yield* Console.log(`${name}: ${c.device}`)
        }).pipe(Effect.provide(latents(dit))))
      yield* Console.log(Table.render(["backend", "model", "ms/train step", "ms/guided forward", "ms/sampled batch", "images/s"], rows))
    })
).pipe(Command.withDescription("MAR against the DiT of the same size: ms per training step, guided forward, sampled batch, and images/s"))
