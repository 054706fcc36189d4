/**
 * The one training loop of the DiT/SiT stages — pre-training and recovery
 * (fine-tuning and distillation) — on latent batches:
 *
 *   - batch `step` of the LatentDataset (the data cursor is the step) and the
 *     step's draws (timesteps, noise, dropped labels) from Training.draws;
 *   - any loss of the parameters (`Task.loss`): its outer call runs outside
 *     the gradient (a teacher's forward on the same draws), the function it
 *     returns is differentiated;
 *   - Training.step: gradients of the trainable parameters, global-norm
 *     clipping, AdamW (its betas; weight decay on all parameters, or off
 *     timm's exempt ones) at the learning rate of a schedule (constant, or
 *     cosine down to a floor, after an optional linear warm-up), EMA;
 *   - Checkpoint.loop: checkpoints, bit-identical resume, progress, and the
 *     non-finite policy (skip / rollback / fail). A run that a non-finite loss
 *     stops ends as a `Diverged` outcome, not as an error, so a grid of runs
 *     can record it;
 *   - the loss curve (the loss and its named terms every `curveEvery` steps)
 *     is part of the checkpointed state, so a resumed run has all of it; it
 *     is stored as data (loss.json) and plotted (loss.png).
 */
import { Effect, Schema } from "effect"
import { Checkpoint, type Stage } from "@tinyfusion/core"
import { LatentDataset } from "@tinyfusion/data"
import type { Config, ModelArtifact } from "@tinyfusion/models"
import { Plot } from "@tinyfusion/plots"
import { AdamW, Compute, type ComputeError, HostTensor, ParamTree, Schedules, tf } from "@tinyfusion/tensor"
import * as GaussianDiffusion from "./GaussianDiffusion.ts"
import * as Training from "./Training.ts"

const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const Positive = Schema.Finite.check(Schema.isGreaterThan(0))
const Beta = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1))

export const NonFinitePolicy = Schema.Literals(["skip", "rollback", "fail"])
export type NonFinitePolicy = typeof NonFinitePolicy.Type

/** The knobs of a run of the loop, part of every training stage's config. */
export const Settings = Schema.Struct({
  steps: Count,
  batchSize: PositiveInt,
  /** Seed of the batches and the draws. */
  seed: Count,
  lr: Positive,
  /** Cosine from lr down to this at the last step (CosineAnnealingLR's eta_min); absent: constant lr. */
  lrFloor: Schema.optional(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))),
  /**
   * Steps of linear warm-up from 0 (MAE/MAR's lr_sched: lr·step/warmup), in
   * front of the constant or cosine rate, which then spans the steps left;
   * absent: none.
   */
  warmup: Schema.optional(Count),
  /** AdamW's (β1, β2); absent: torch's (0.9, 0.999). MAR: (0.9, 0.95). */
  betas: Schema.optional(Schema.Tuple([Beta, Beta])),
  weightDecay: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)),
  /**
   * Parameters exempt from the weight decay, timm's add_weight_decay (MAE,
   * MAR): every 1-D tensor and bias, and the keys containing any of these
   * strings (MAR: ["diffloss"]). Absent: every parameter decays (DiT's
   * AdamW on model.parameters()).
   */
  noDecay: Schema.optional(Schema.Array(Schema.String)),
  /** Global-norm clip (clip_grad_norm_); absent: no clipping (DiT's train.py). */
  maxGradNorm: Schema.optional(Positive),
  emaDecay: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThanOrEqualTo(1)),
  /** Save a checkpoint every this many steps (0: never). */
  checkpointEvery: Count,
  /** Record the loss curve every this many steps (and at the last step). */
  curveEvery: PositiveInt,
  nonFinite: NonFinitePolicy
}).check(Schema.makeFilter((s) => [
  ...(s.lrFloor !== undefined && s.lrFloor > s.lr ? [`lrFloor ${s.lrFloor} is above lr ${s.lr}`] : []),
  ...(s.warmup !== undefined && s.warmup > s.steps ? [`warmup ${s.warmup} is longer than the run's ${s.steps} steps`] : [])
]))
export type Settings = typeof Settings.Type

/** One recorded step: the loss and its named (unweighted) terms. */
export const Point = Schema.Struct({
  step: Count,
  loss: Schema.Finite,
  terms: Schema.Record(Schema.String, Schema.Finite)
})
export type Point = typeof Point.Type

export const Curve = Schema.Array(Point)
export type Curve = typeof Curve.Type

export const files = { curve: "loss.json", plot: "loss.png" } as const

/** The latents do not fit the model being trained. */
export class DataMismatch extends Schema.TaggedError<DataMismatch>()("DataMismatch", {
  model: Schema.String,
  latents: Schema.String
}) {
  override get message(): string {
    return `latents ${this.latents} do not fit ${this.model}`
  }
}

/** A run a non-finite loss stopped, where the caller makes that an error (pre-training). */
export class Diverged extends Schema.TaggedError<Diverged>()("Diverged", {
  stage: Schema.String,
  step: Schema.Int,
  loss: Schema.Number
}) {
  override get message(): string {
    return `stage ${this.stage} diverged: loss ${this.loss} at step ${this.step}`
  }
}

export interface Batch {
  readonly step: number
  /** Latents [B, H, W, C], already multiplied by the scale factor. */
  readonly x: tf.Tensor4D
  /** The step's timesteps, noise and labels after dropout: a teacher sees the same. */
  readonly draws: Training.Draws
}

export interface Losses {
  /** What is minimised. */
  readonly loss: tf.Scalar
  /** Parts recorded in the curve, e.g. { gt, kd, rep }. */
  readonly terms: Readonly<Record<string, tf.Scalar>>
}

export interface Task {
  /** The latents it trains on: side, channels and classes (a DiT or MAR config has these fields). */
  readonly data: { readonly inputSize: number; readonly inChannels: number; readonly numClasses: number }
  /** The parameters before step 0 (reference keys). */
  readonly init: HostTensor.HostTree
  /** A step's draws for the batch's labels (Training.draws for a DiT or SiT; MAR adds its masking). */
  readonly draws: (labels: ArrayLike<number>, at: { readonly seed: number; readonly step: number }) => Training.Draws
  /**
   * A step's loss. The outer call runs outside the gradient (a teacher's
   * forward belongs there); the function it returns is differentiated with
   * respect to the trainable parameters.
   */
  readonly loss: (batch: Batch) => (params: ParamTree.ParamTree) => Losses
}

/** DiT's Gaussian diffusion (1000 steps, learned σ as the config says) or SiT's transport. */
export const objective = (family: ModelArtifact.Family, config: Config.Config) =>
  family === "sit"
    ? Effect.succeed<Training.Objective>({ _tag: "sit" })
    : Effect.map(Effect.orDie(GaussianDiffusion.make({ learnSigma: config.learnSigma })), (diffusion): Training.Objective => ({ _tag: "ddpm", diffusion }))

/** Plain training on the objective's loss (pre-training, fine-tuning). */
export const diffusionTask = (objective: Training.Objective, config: Config.Config, init: HostTensor.HostTree): Task => ({
  data: config,
  init,
  draws: (labels, at) => Training.draws(objective, config, labels, at),
  loss: (batch) => (params) => ({ loss: Training.loss(objective, config, params, batch.x, batch.draws).loss, terms: {} })
})

/** The learning rate of each step, as a multiple of `lr` (what AdamW.update scales by). */
export const lrScale = (settings: Settings): Schedules.Schedule => {
  const warmup = settings.warmup ?? 0
  const after = settings.lrFloor === undefined
    ? Schedules.constant(settings.lr)
    : Schedules.cosine({ from: settings.lr, to: settings.lrFloor, steps: settings.steps - warmup })
  const schedule = warmup === 0 ? after : Schedules.warmup(warmup, after)
  return (step) => schedule(step) / settings.lr
}

/** The AdamW of the settings: their betas, and one group, or timm's two when some parameters are exempt from decay. */
export const optimiser = (settings: Settings): AdamW.Config => ({
  ...AdamW.defaults,
  ...(settings.betas === undefined ? {} : { beta1: settings.betas[0], beta2: settings.betas[1] }),
  groups: settings.noDecay === undefined
    ? AdamW.single(settings.lr, settings.weightDecay).groups
    : AdamW.decoupled(settings.lr, settings.weightDecay, AdamW.undecayed(settings.noDecay))
})

export const hyper = (settings: Settings): Training.Hyper => ({
  optimiser: optimiser(settings),
  emaDecay: settings.emaDecay,
  ...(settings.maxGradNorm === undefined ? {} : { maxGradNorm: settings.maxGradNorm })
})

/**
 * The tree with its leaves in sorted key order. A checkpoint comes back in
 * the order its file lists the keys, and the global gradient norm sums over
 * the leaves in tree order: every step starts from this one order, or a
 * resumed run would round differently from an uninterrupted one.
 */
const canonical = (tree: ParamTree.ParamTree): ParamTree.ParamTree =>
  ParamTree.unflatten(ParamTree.flattenTensors(tree).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) as ParamTree.ParamTree

/** The batch of `step` on the device and its draws. */
export const batchAt = (dataset: LatentDataset["Service"], settings: Settings, task: Task, step: number): Batch => {
  const b = dataset.batch({ seed: settings.seed, batchSize: settings.batchSize }, step)
  return {
    step,
    x: tf.tensor4d(b.latents, [...b.shape]),
    draws: task.draws(b.labels, { seed: settings.seed, step })
  }
}

export interface StepResult {
  readonly state: Training.State
  readonly loss: number
  readonly terms: Readonly<Record<string, number>>
}

/**
 * One step: the batch and draws of `step`, the task's loss, the update; the
 * loss and its terms read back (one device read). Run it inside
 * `compute.scoped`: the new state is the only tensor result.
 */
export const step = Effect.fnUntraced(function*(
  settings: Settings,
  task: Task,
  state: Training.State,
  index: number
): Effect.fn.Return<StepResult, ComputeError, Compute | LatentDataset> {
  const compute = yield* Compute
  const dataset = yield* LatentDataset
  const lossOf = task.loss(batchAt(dataset, settings, task, index))
  let terms: Array<readonly [string, tf.Scalar]> = []
  const start: Training.State = { params: canonical(state.params), ema: canonical(state.ema), optimiser: state.optimiser }
  const next = Training.step(hyper(settings), start, (params) => {
    const losses = lossOf(params)
    // The terms outlive the gradient's scope, which releases all but the loss.
    terms = Object.entries(losses.terms).map(([name, t]) => [name, tf.keep(t)] as const)
    return losses.loss
  }, lrScale(settings)(index))
  const values = yield* compute.read(tf.stack([next.loss, ...terms.map(([, t]) => t)])).pipe(
    Effect.ensuring(Effect.sync(() => tf.dispose(terms.map(([, t]) => t))))
  )
  return {
    state: next.state,
    loss: values[0]!,
    terms: Object.fromEntries(terms.map(([name], i) => [name, values[i + 1]!]))
  }
})

const LoopData = Schema.Struct({ adamStep: Count, curve: Curve })
type LoopData = typeof LoopData.Type

type LoopTensors = Readonly<Record<"params" | "ema" | "m" | "v", ParamTree.ParamTree>>

const toLoop = (s: Training.State, curve: Curve): Checkpoint.State<LoopData, LoopTensors> => ({
  tensors: { params: s.params, ema: s.ema, m: s.optimiser.m, v: s.optimiser.v },
  data: { adamStep: s.optimiser.step, curve }
})

const fromLoop = (s: Checkpoint.State<LoopData, LoopTensors>): Training.State => {
  const t = s.tensors
  return { params: t.params, ema: t.ema, optimiser: { step: s.data.adamStep, m: t.m, v: t.v } }
}

const finite = (terms: Readonly<Record<string, number>>) => Object.values(terms).every(Number.isFinite)

export interface Timing {
  /** The step the run resumed from (0: a fresh start). */
  readonly resumedFrom: number
  /** Steps computed by this process. */
  readonly stepsRun: number
  /** Wall-clock seconds of this process's loop (steps, checkpoints, reads). */
  readonly seconds: number
}

export type Outcome =
  | Timing & {
    readonly _tag: "Finished"
    readonly params: HostTensor.HostTree
    readonly ema: HostTensor.HostTree
    readonly curve: Curve
    readonly lastLoss: number
    /** Steps whose update a non-finite loss skipped (policy skip). */
    readonly skipped: ReadonlyArray<number>
  }
  | Timing & {
    readonly _tag: "Diverged"
    /** The step whose loss was not finite (policy fail, or again after a rollback). */
    readonly step: number
    readonly loss: number
    /** The loss of the last step with a finite one (NaN: none). */
    readonly lastLoss: number
    /** The curve up to the last finite step. */
    readonly curve: Curve
  }

/**
 * Runs the loop inside a stage (checkpoints under its key) on the
 * LatentDataset in context. A fresh run starts from `task.init` with the EMA
 * equal to it and zero AdamW moments.
 */
export const run = Effect.fn("Trainer.run")(function*(ctx: Stage.Context, settings: Settings, task: Task) {
  const compute = yield* Compute
  const dataset = yield* LatentDataset
  const [h, w, c] = dataset.latentShape
  const config = task.data
  if (h !== config.inputSize || w !== config.inputSize || c !== config.inChannels || dataset.classes > config.numClasses) {
    return yield* new DataMismatch({
      model: `a model of ${config.inputSize}×${config.inputSize}×${config.inChannels} latents and ${config.numClasses} classes`,
      latents: `of ${h}×${w}×${c} in ${dataset.classes} classes`
    })
  }
  // The curve of the newest accepted state, for a run that ends diverged (the loop releases its state).
  let latest: Curve = []
  let lastLoss = Number.NaN
  let firstStep: number | undefined
  let stepsRun = 0
  const began = Date.now()
  const timing = (resumedFrom: number): Timing => ({ resumedFrom, stepsRun, seconds: (Date.now() - began) / 1000 })
  const record = (index: number) => index % settings.curveEvery === 0 || index === settings.steps - 1
  const outcome: Outcome = yield* Checkpoint.loop(ctx, {
    steps: settings.steps,
    every: settings.checkpointEvery,
    data: LoopData,
    nonFinite: settings.nonFinite,
    init: Effect.sync(() => toLoop(Training.init(HostTensor.treeToTensors(task.init)), [])),
    step: (state, index) =>
      compute.scoped(Effect.gen(function*() {
        const out = yield* step(settings, task, fromLoop(state), index)
        firstStep ??= index
        stepsRun += 1
        const ok = Number.isFinite(out.loss) && finite(out.terms)
        const curve = ok && record(index)
          ? [...state.data.curve, { step: index, loss: out.loss, terms: out.terms }]
          : state.data.curve
        if (ok) {
          latest = curve
          lastLoss = out.loss
        }
        // A finite loss with a non-finite term is as diverged as a non-finite loss.
        return { state: toLoop(out.state, curve), loss: ok ? out.loss : Number.NaN }
      }))
  }).pipe(
    Effect.flatMap((done) =>
      Effect.gen(function*() {
        const s = fromLoop(done.state)
        const params = yield* HostTensor.treeFromTensors(s.params)
        const ema = yield* HostTensor.treeFromTensors(s.ema)
        return {
          _tag: "Finished" as const,
          params,
          ema,
          curve: done.state.data.curve,
          lastLoss: done.lastLoss,
          skipped: done.skipped,
          ...timing(done.resumedFrom)
        }
      }).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(done.state.tensors))))
    ),
    Effect.catchTag("NonFiniteLoss", (e) =>
      Effect.succeed({ _tag: "Diverged" as const, step: e.step, loss: e.loss, lastLoss, curve: latest, ...timing(firstStep ?? 0) }))
  )
  return outcome
})

/** Writes the curve as data (loss.json) and as a plot (loss.png) through a stage context. */
export const writeCurve = Effect.fn("Trainer.writeCurve")(function*(ctx: Stage.Context, curve: Curve, title: string) {
  yield* ctx.writeJson(files.curve, yield* Schema.encodeUnknownEffect(Curve)(curve).pipe(Effect.orDie))
  const points = curve.flatMap((p) => [
    { step: p.step, value: p.loss, series: "loss" },
    ...Object.entries(p.terms).map(([series, value]) => ({ step: p.step, value, series }))
  ])
  // Terms may differ by orders of magnitude (a hidden-state loss beside the diffusion loss).
  const logY = points.length > 0 && points.every((p) => p.value > 0)
  const figure = yield* Effect.promise(() => Plot.lines("loss", title, points, { x: "step", y: "loss", logY }))
  yield* ctx.writeBytes(files.plot, figure.png)
})

/** The curve a stage stored (loss.json). */
export const readCurve = (artifact: Stage.Artifact<unknown>) => artifact.json(files.curve, Curve)
