/**
 * `tinyfusion eval`: samples a model and scores it against a reference set
 * with ADM's five numbers (FID, sFID, Inception Score, precision, recall), on
 * the store (`--store`): prints the metrics, and the evaluation artifact holds
 * them in its manifest with samples.png (a grid of samples) and the sample
 * features and statistics. A finished evaluation is a cache hit; a killed one
 * resumes from its finished parts.
 *
 * The model: --model-key (an artifact of the store) or --model-file (a
 * checkpoint file, brought into the store by the `model-file` stage; with
 * --family mar, a MAR's by `mar-file`). A MAR samples by iterative unmasking
 * (--iterations, --temperature, --cfg-schedule; --cfg and --seed as for a
 * DiT), a DiT or SiT with --sampler and --steps. The
 * autoencoder and the reference: by key, or else the mini preset's data
 * stages run from the store — `data autoencoder` and `data features` at their
 * defaults (cache hits once those commands have run) and the reference
 * statistics of the Fashion-MNIST test split (computed once).
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Graph, Stage } from "@tinyfusion/core"
import { MarConfig } from "@tinyfusion/models"
import { Stages } from "@tinyfusion/data"
import { Evaluation, Interval, Reference } from "@tinyfusion/eval"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as ModelFlags from "../ModelFlags.ts"
import * as Table from "../Table.ts"
import { dataFlag, dataStages } from "./data.ts"

const defaults = Evaluation.miniEvaluation

const optionalKey = (name: string, description: string) => Flag.String(name).pipe(Flag.withDescription(description), Flag.optional)

export const flags = {
  ...ModelFlags.flags,
  autoencoder: optionalKey(
    "autoencoder",
    "Key of the autoencoder artifact of the model's latents (default: `tinyfusion data autoencoder` at its defaults, run from the store)"
  ),
  featureNet: optionalKey(
    "feature-net",
    "Key of the feature-net artifact whose features the metrics use (default: `tinyfusion data features` at its defaults, run from the store)"
  ),
  reference: optionalKey(
    "reference",
    "Key of a reference artifact (replaces --feature-net; default: the feature network's statistics of the Fashion-MNIST test split)"
  ),
  data: dataFlag,
  n: CheckedFlags.count("n").pipe(Flag.withDescription("Samples (paper: 50,000; Table 4: 10,000)"), Flag.withDefault(defaults.samples)),
  batchSize: CheckedFlags.count("batch-size").pipe(Flag.withDescription("Samples per batch (doubled in the network under guidance)"), Flag.withDefault(defaults.batchSize)),
  sampler: Flag.Literals("sampler", ["ddpm", "ddim", "ode", "sde"]).pipe(
    Flag.withDescription("Sampler (default: ddpm for a DiT, ode for a SiT)"),
    Flag.optional
  ),
  steps: Flag.String("steps").pipe(
    Flag.withDescription("ddpm/ddim: timestep respacing (250, ddim50, …); ode/sde: grid points"),
    Flag.withDefault(defaults.sampling.steps)
  ),
  cfg: CheckedFlags.guidance("cfg").pipe(Flag.withDescription("Classifier-free guidance scale (1: none)"), Flag.withDefault(defaults.sampling.cfgScale)),
  guidedChannels: Flag.Literals("guided-channels", ["first-3", "all"]).pipe(
    Flag.withDescription("Channels guidance moves: the reference code's first 3, or all"),
    Flag.withDefault(defaults.sampling.guidedChannels)
  ),
  iterations: CheckedFlags.count("iterations").pipe(
    Flag.withDescription("MAR: autoregressive steps (num_iter; default one token per step, as the reference's 256 for 256 tokens)"),
    Flag.optional
  ),
  temperature: CheckedFlags.positive("temperature").pipe(
    Flag.withDescription("MAR: the head sampler's noise scale (the reference: 1.0 with guidance)"),
    Flag.withDefault(1)
  ),
  cfgSchedule: Flag.Literals("cfg-schedule", ["linear", "constant"]).pipe(
    Flag.withDescription("MAR: guidance rising linearly with the tokens made (the reference's) or constant"),
    Flag.withDefault("linear" as const)
  ),
  seed: CheckedFlags.natural("seed").pipe(Flag.withDescription("Seed of labels and noise"), Flag.withDefault(defaults.sampling.seed)),
  weights: Flag.Literals("weights", ["ema", "raw"]).pipe(Flag.withDescription("EMA or raw weights"), Flag.withDefault(defaults.weights)),
  labels: Flag.Literals("labels", ["random", "balanced"]).pipe(
    Flag.withDescription("Class labels: uniform draws, or classes in turn"),
    Flag.withDefault(defaults.labels)
  ),
  splitSize: CheckedFlags.count("split-size").pipe(Flag.withDescription("Samples per Inception Score split"), Flag.withDefault(defaults.splitSize)),
  grid: CheckedFlags.natural("grid").pipe(Flag.withDescription("Samples in samples.png"), Flag.withDefault(defaults.gridImages)),
  partBatches: CheckedFlags.count("part-batches").pipe(Flag.withDescription("Batches per checkpointed part"), Flag.withDefault(defaults.partBatches)),
  replicates: CheckedFlags.natural("replicates").pipe(
    Flag.withDescription(`Bootstrap replicates for the 95% intervals (sFID: at most ${defaults.bootstrap.spatialReplicates}); 0: none`),
    Flag.withDefault(defaults.bootstrap.replicates)
  )
}

export const evaluate = Command.make("eval", flags, (o) =>
  GlobalFlags.withCompute(Effect.gen(function*() {
    const runner = yield* Graph.runner
    const model = yield* ModelFlags.artifact(o)
    const output = model.output
    const family = output.family
    const mar = output.family === "mar"
      ? {
        mar: {
          iterations: Option.getOrElse(o.iterations, () => MarConfig.tokens(output.config)),
          cfgScale: o.cfg,
          cfgSchedule: o.cfgSchedule,
          temperature: o.temperature,
          seed: o.seed
        }
      }
      : {}
    const config = yield* Stage.decodeConfig(Evaluation.EvaluationStage, {
      ...mar,
      samples: o.n,
      batchSize: o.batchSize,
      sampling: {
        sampler: Option.getOrElse(o.sampler, () => (family === "dit" ? "ddpm" : "ode")),
        steps: o.steps,
        cfgScale: o.cfg,
        guidedChannels: o.guidedChannels,
        seed: o.seed
      },
      weights: o.weights,
      labels: o.labels,
      splitSize: o.splitSize,
      gridImages: o.grid,
      partBatches: o.partBatches,
      bootstrap: { ...defaults.bootstrap, replicates: o.replicates, spatialReplicates: Math.min(o.replicates, defaults.bootstrap.spatialReplicates) }
    })
    // Inputs given by key need no data; the mini data stages read the dataset only when they must run.
    const stages = yield* dataStages(o.data)
    const input = <A, E, R>(key: Option.Option<string>, node: () => Graph.Node<A, E, R>) =>
      Option.match(key, { onSome: (k) => runner.artifact(Graph.existing(k)), onNone: () => runner.run(node()) })
    const autoencoder = yield* input(o.autoencoder, () => Graph.node(stages.autoencoder, Stages.miniAutoencoder, {}))
    const reference = yield* input(o.reference, () =>
      Graph.node(stages.reference, Reference.miniReference, {
        featureNet: Option.match(o.featureNet, { onSome: Graph.existing, onNone: () => Graph.node(stages.featureNet, Stages.miniFeatureNet, {}) })
      }))
    const result = yield* runner.run(Graph.node(Evaluation.EvaluationStage, config, {
      model: Graph.existing(model.key),
      autoencoder: Graph.existing(autoencoder.key),
      reference: Graph.existing(reference.key)
    }))
    const referenceKey = reference.key
    const out = result.output
    const boot = out.bootstrap
    // ± the 95% half-width: t(0.975, B − 1) standard errors of the bootstrap.
    const half = (se: number | null | undefined, replicates: number, digits: number) =>
      se == null ? "–" : `± ${Table.fixed(se * Interval.studentTQuantile(0.975, replicates - 1), digits)}`
    yield* Console.log(Table.render(["", "FID", "sFID", "IS", "precision", "recall"], [
      ["value", Table.fixed(out.fid, 3), Table.fixed(out.sfid, 3), Table.fixed(out.is, 3), Table.fixed(out.precision, 4), Table.fixed(out.recall, 4)],
      ...(boot === null ? [] : [[
        "95%",
        half(boot.standardErrors.fid, boot.replicates, 3),
        half(boot.standardErrors.sfid, boot.spatialReplicates, 3),
        half(boot.standardErrors.is, boot.replicates, 3),
        half(boot.standardErrors.precision, boot.replicates, 4),
        half(boot.standardErrors.recall, boot.replicates, 4)
      ]])
    ]))
    const s = config.sampling
    const m = config.mar
    yield* Console.log([
      `evaluation ${result.key}${result.cached ? " (cached)" : ""}`,
      `  ${out.samples} samples of ${model.key} (${out.family}, depth ${out.depth}, ${out.parameters.toLocaleString("en-US")} parameters, ${out.weights} weights)`,
      m === undefined
        ? `  ${s.sampler} ${s.steps} steps, cfg ${s.cfgScale} (${s.guidedChannels}), seed ${s.seed}`
        : `  ${m.iterations} unmasking steps, cfg ${m.cfgScale} (${m.cfgSchedule}), temperature ${m.temperature}, seed ${m.seed}`,
      `  against ${out.referenceImages} reference images (${referenceKey})`,
      ...(result.manifest.metrics["itPerS"] == null ? [] : [
        `  sampling on ${result.manifest.backend?.device ?? "?"}: ${Table.metric(result.manifest)("itPerS", 2)} it/s, ${
          Table.metric(result.manifest)("imagesPerS", 3)
        } images/s`
      ]),
      ...(result.manifest.files.some((f) => f.name === Evaluation.files.grid) ? [`  samples: ${result.path(Evaluation.files.grid)}`] : []),
      `  features: ${result.path(Evaluation.files.features)}`
    ].join("\n"))
  }))
).pipe(Command.withDescription(
  "Sample a model and score it (FID, sFID, IS, precision, recall) against the reference set; writes samples.png. " +
    "Model: --model-key or --model-file. Without --autoencoder/--feature-net/--reference keys, runs the mini data stages from the store " +
    "(cache hits once `tinyfusion data autoencoder` and `data features` have run at their defaults)"
))
