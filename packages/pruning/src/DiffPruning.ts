/**
 * Diff-Pruning (Fang, Ma and Wang, NeurIPS 2023), the width-pruning
 * baseline of Table 1 and Fig. 4: first-order Taylor importance of DiT's
 * structural groups (Width.ts) from the diffusion-loss gradient, then one
 * uniform cut of every width to the share that removes the asked ratio of
 * parameters (Width.forRatio). Every block stays.
 *
 * As the reference (Diff-Pruning's ddpm_prune.py, --pruner diff-pruning,
 * with Torch-Pruning's TaylorImportance(multivariable=False)): one fixed
 * batch of clean latents and one fixed noise (here the calibration set);
 * the chain steps t = 0, 1, 2, … are visited in order with every sample at
 * t; each step's loss is back-propagated and the gradients summed; the
 * sweep ends after the first step whose loss is below threshold × the
 * largest loss so far (the informative low-noise steps; later steps add
 * little but noise); a unit's importance is Σ |w · Σ_t ∂L_t/∂w| over its
 * weights. `stride` visits every stride-th step (the reference: 1).
 *
 * The loss is the model's training objective (DiT: ε-MSE + vb on chain
 * steps of 1000; SiT: the velocity MSE at t = step / 1000). The timesteps
 * are found first with forward passes (`sweep`); the gradients are then
 * summed on a Checkpoint.loop, so a killed run resumes where it was.
 */
import { Effect, Schema } from "effect"
import { Checkpoint, Method } from "@tinyfusion/core"
import { CalibrationLoss } from "@tinyfusion/eval"
import type { Training } from "@tinyfusion/diffusion"
import { Compute, Gradients, HostTensor, ParamTree, tf, tidy } from "@tinyfusion/tensor"
import type { BlockStack } from "./BlockStack.ts"
import * as Pruner from "./Pruner.ts"
import * as Selection from "./Selection.ts"
import * as Width from "./Width.ts"

export const name = "diff-pruning"

const { option } = Method
const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const Options = Schema.Struct({
  ratio: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1))
    .annotate({ description: "The share of the teacher's parameters removed (Table 1: 0.5 and 0.75); every block stays" }),
  threshold: option(
    Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1)),
    0.05,
    "End the sweep after the first step whose loss is below threshold × the largest so far (0: visit every step)"
  ),
  stride: option(PositiveInt, 1, "Visit chain steps 0, stride, 2·stride, … (the reference: 1)"),
  batchSize: option(PositiveInt, 64, "Samples per forward and backward pass (memory, not the result)"),
  checkpointEvery: option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), 100, "Checkpoint the sweep every this many visited steps (0: never)")
})
export type Options = typeof Options.Type

/** What Diff-Pruning decides besides keeping every block: the narrower DiT's channels, and the sweep behind them. */
export const Evidence = Schema.Struct({
  cut: Schema.Struct({
    /** Parameters of the narrower DiT. */
    parameters: Index,
    /** The share of the teacher's parameters the target removes. */
    ratio: Schema.Finite,
    /** The share of every width kept (Width.forRatio). */
    share: Schema.Finite,
    kept: Width.Kept
  }),
  /** The chain steps the diffusion-loss gradient was accumulated over, in order, and the loss at each. */
  sweep: Schema.Struct({ steps: Schema.Array(Index), losses: Schema.Array(Schema.Finite) })
}).check(Schema.makeFilter((e) => (e.sweep.steps.length === e.sweep.losses.length ? undefined : "one loss per accumulated step")))
export type Evidence = typeof Evidence.Type

/** Chain steps of the sweep's grid: DDPM's timesteps, and SiT's t in thousandths. */
const chainSteps = (objective: Training.Objective): number => (objective._tag === "ddpm" ? objective.diffusion.numTimesteps : 1000)

/** The network's time at a chain step: the step itself (DDPM) or step / 1000 (SiT). */
const timeAt = (objective: Training.Objective, step: number): number => (objective._tag === "ddpm" ? step : step / chainSteps(objective))

/**
 * The loss of the whole calibration set with every sample at network time
 * `time` (its fixed latents, labels and noise), and its gradient with
 * respect to the trained parameters (pos_embed is fixed), computed in
 * batches of `batchSize` and summed: the gradient of the set's mean loss.
 */
export const gradientAt = Effect.fn("DiffPruning.gradientAt")(function*(
  stack: BlockStack,
  params: ParamTree.ParamTree,
  set: CalibrationLoss.CalibrationSet,
  time: number,
  batchSize: number
) {
  const compute = yield* Compute
  const n = set.shape[0]
  const { trainable, frozen } = stack.split(params)
  let grads: ParamTree.ParamTree | undefined
  let loss = 0
  for (let from = 0; from < n; from += batchSize) {
    const to = Math.min(n, from + batchSize)
    const sum = grads
    const part = tidy(() => {
      const { x, draws } = CalibrationLoss.slice(set, from, to)
      const at = { ...draws, t: new Array<number>(to - from).fill(time) }
      const share = (to - from) / n
      const r = Gradients.valueAndGrad((p) => tf.mul(stack.loss(stack.join(p, frozen), x, at, {}), share) as tf.Scalar, trainable)
      return { value: r.value, grads: sum === undefined ? r.grads : ParamTree.zipWith([sum, r.grads], ([a, b]) => tf.add(a!, b!)) as ParamTree.ParamTree }
    })
    if (sum !== undefined) ParamTree.dispose(sum)
    grads = part.grads
    loss += (yield* compute.read(part.value))[0]!
    part.value.dispose()
  }
  return { loss, grads: grads! }
})

/**
 * The sweep's timesteps: the loss of the calibration set at chain steps 0,
 * stride, 2·stride, … (forward passes, float64 means) up to and including the
 * first whose loss is below threshold × the largest so far, or the chain's
 * end. Known before any gradient is taken, so the accumulation loop has a
 * fixed length and checkpoints only what it computes.
 */
export const sweep = Effect.fn("DiffPruning.sweep")(function*(
  stack: BlockStack,
  params: ParamTree.ParamTree,
  set: CalibrationLoss.CalibrationSet,
  objective: Training.Objective,
  options: Pick<Options, "threshold" | "stride" | "batchSize">
) {
  const steps: Array<number> = []
  const losses: Array<number> = []
  for (let step = 0; step < chainSteps(objective); step += options.stride) {
    const time = timeAt(objective, step)
    const loss = yield* stack.calibrationLoss(params, { ...set, t: set.t.map(() => time) }, { batchSize: options.batchSize })
    if (!Number.isFinite(loss)) return yield* new Pruner.PruneFailed({ method: name, reason: `the calibration loss at timestep ${step} is ${loss}` })
    steps.push(step)
    losses.push(loss)
    if (loss < options.threshold * Math.max(...losses)) break
  }
  return { steps, losses }
})

/**
 * The gradients of the calibration loss summed over the sweep's timesteps
 * (a host tree of the trained keys), on Checkpoint.loop in `ctx`.
 */
export const accumulate = Effect.fn("DiffPruning.accumulate")(function*(
  request: Pick<Pruner.Request<Options>, "stack" | "params" | "calibration" | "ctx">,
  objective: Training.Objective,
  steps: ReadonlyArray<number>,
  options: Pick<Options, "batchSize" | "checkpointEvery">
) {
  const compute = yield* Compute
  const { stack, params, calibration } = request
  const result = yield* Checkpoint.loop(request.ctx, {
    steps: steps.length,
    every: options.checkpointEvery,
    data: Schema.Struct({}),
    init: Effect.sync(() => ({
      tensors: ParamTree.mapTensors(stack.split(params).trainable, (t) => tf.zerosLike(t)) as ParamTree.ParamTree,
      data: {}
    })),
    step: (state, index) =>
      Effect.gen(function*() {
        const at = yield* gradientAt(stack, params, calibration, timeAt(objective, steps[index]!), options.batchSize)
        const tensors = compute.tidy(() => ParamTree.zipWith([state.tensors, at.grads], ([a, b]) => tf.add(a!, b!)) as ParamTree.ParamTree)
        ParamTree.dispose(at.grads)
        return { state: { tensors, data: {} }, loss: at.loss }
      })
  })
  const grads = yield* HostTensor.treeFromTensors(result.state.tensors)
  ParamTree.dispose(result.state.tensors)
  return grads
})

export const method = Pruner.make({
  name,
  description: "Diff-Pruning: width pruning of heads, MLP channels and hidden widths by Taylor importance over the informative timesteps",
  module: import.meta.url,
  options: Options,
  evidence: Evidence,
  // Every block stays; the model is the teacher cut to the kept channels.
  model: (teacher, evidence) => Width.narrow(teacher.config, teacher.params, evidence.cut.kept),
  prune: Effect.fn("DiffPruning.prune")(function*(request: Pruner.Request<Options>) {
    const { stack, target, options: o } = request
    const dit = stack.dit
    if (dit === undefined) {
      return yield* new Pruner.UnsupportedTarget({ method: name, target: stack.description, reason: "width pruning cuts a DiT's heads and channels" })
    }
    if (target.keep !== stack.depth || target.scheme !== undefined) {
      return yield* new Pruner.UnsupportedTarget({
        method: name,
        target: Selection.describe(target),
        reason: `width pruning keeps every block: give keep ${stack.depth} and the options' ratio`
      })
    }
    const shape = Width.forRatio(dit.config, o.ratio)
    const swept = yield* sweep(stack, request.params, request.calibration, dit.objective, o)
    const grads = yield* accumulate(request, dit.objective, swept.steps, o)
    const params = new Map(ParamTree.flatten(yield* HostTensor.treeFromTensors(request.params), HostTensor.isHostTensor))
    const scores = Width.taylor(dit.config, params, new Map(ParamTree.flatten(grads, HostTensor.isHostTensor)))
    const asTensor = (rows: ReadonlyArray<Float64Array>) =>
      HostTensor.float32([rows.length, rows[0]!.length], Float32Array.from(rows.flatMap((r) => [...r])))
    yield* request.ctx.writeTensors("importance.safetensors", {
      hidden: HostTensor.float32([scores.hidden.length], Float32Array.from(scores.hidden)),
      conditioning: HostTensor.float32([scores.conditioning.length], Float32Array.from(scores.conditioning)),
      timestep: HostTensor.float32([scores.timestep.length], Float32Array.from(scores.timestep)),
      heads: asTensor(scores.heads),
      mlp: asTensor(scores.mlp)
    })
    yield* request.ctx.metric("parametersRemoved", shape.removed)
    yield* request.ctx.metric("stepsAccumulated", swept.steps.length)
    return {
      kept: Array.from({ length: stack.depth }, (_, i) => i),
      evidence: {
        cut: { parameters: shape.parameters, ratio: o.ratio, share: shape.share, kept: Width.select(scores, shape.config) },
        sweep: { steps: swept.steps, losses: swept.losses }
      }
    }
  })
})
