/**
 * TinyFusion's learnable depth pruning (paper §3.2): one logit vector per
 * N:M group over its C(M, N) candidate masks, all starting equal (a uniform
 * distribution). Every step samples, per sample of the batch, a hard
 * Gumbel-softmax choice with straight-through gradients (Gumbel.ts), gates
 * the blocks with it (x ← m·f(x) + (1−m)·x, every block still computed) and
 * trains the logits jointly with a weight update ΔW — LoRA on every Linear,
 * all weights (Full) or none (Frozen) — on the plain diffusion loss.
 *
 * As the reference (prune_by_learning.py): τ linear from 4 to 0.1 over the
 * run, scaling 100; AdamW without weight decay, gates at lr 1e-3 and ΔW at
 * 1e-4; global-norm clip 1.0 over every trained tensor; a non-finite step is
 * skipped; an EMA (0.999) of the logits decides: per group the argmax of the
 * EMA logits, with confidence max softmax(scaling × EMA logits).
 *
 * The run is a Checkpoint.loop (logits, EMA, ΔW, AdamW moments; the history
 * in the JSON part), and every random number comes from Rng streams at the
 * step: a resumed run ends with the same bits as an uninterrupted one.
 */
import { Effect, Schema } from "effect"
import { Checkpoint, Method } from "@tinyfusion/core"
import { AdamW, Compute, type ComputeError, HostTensor, ParamTree, Rng, Schedules, tf, tidy, Update } from "@tinyfusion/tensor"
import type { BlockStack } from "./BlockStack.ts"
import * as Gumbel from "./Gumbel.ts"
import type { LatentSource } from "./LatentSource.ts"
import * as Lora from "./Lora.ts"
import * as Pruner from "./Pruner.ts"
import * as Scheme from "./Scheme.ts"
import * as Selection from "./Selection.ts"

const Positive = Schema.Finite.check(Schema.isGreaterThan(0))
const { option } = Method

export const Options = Schema.Struct({
  iterations: option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 500, "Mask-learning iterations (the τ schedule spans them)"),
  update: option(Schema.Literals(["lora", "full", "frozen"]), "lora", "The co-optimised weight update ΔW: LoRA on every Linear, all weights, or none"),
  rank: option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 8, "LoRA rank"),
  alpha: option(Positive, 16, "LoRA α; the update is scaled by α / rank (16 / 8 = 2, the reference's alpha = 2·rank)"),
  tau: option(Schema.Tuple([Positive, Positive]), [4, 0.1], "Gumbel temperature, linear from the first to the second over the run"),
  scaling: option(Positive, 100, "Logit scaling of the sampling and of the confidence"),
  gateLr: option(Positive, 1e-3, "Learning rate of the gate logits"),
  weightLr: option(Positive, 1e-4, "Learning rate of ΔW (LoRA or, with full, the weights)"),
  maxGradNorm: option(Positive, 1, "Global gradient-norm clip"),
  emaDecay: option(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1)), 0.999, "EMA decay of the logits that decide"),
  batchSize: option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 64, "Latents per iteration"),
  logEvery: option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 10, "Record the decision every this many iterations (and at the start and the end)"),
  checkpointEvery: option(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), 100, "Checkpoint every this many iterations (0: never)")
})
export type Options = typeof Options.Type

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** One logged iteration of mask learning: the decision the EMA gates gave then. */
export const Snapshot = Schema.Struct({
  /** Iterations done when it was taken (0: the uniform start). */
  step: Index,
  /** Teacher indices of the pruned model's layers, ascending. */
  kept: Schema.Array(Index),
  /** Per kept layer: the probability of the candidate that put it there (1 for trailing layers outside every group). */
  probability: Schema.Array(Schema.Finite)
})
export type Snapshot = typeof Snapshot.Type

export const Evidence = Schema.Struct({
  /** Per group, each candidate's probability softmax(scaling × EMA logits). */
  probabilities: Schema.Array(Schema.Array(Schema.Finite)),
  /** Mean over groups of the largest candidate probability. */
  confidence: Schema.Finite,
  /** The decision at every logged iteration (Figure 6). */
  history: Schema.Array(Snapshot)
})
export type Evidence = typeof Evidence.Type

/** What the EMA logits of a scheme decide. */
export interface Decided {
  /** Per group, the candidate chosen (argmax of the logits; ties to the first). */
  readonly choice: ReadonlyArray<number>
  readonly kept: ReadonlyArray<number>
  /** Per group, softmax(scaling × logits) (float64). */
  readonly probabilities: ReadonlyArray<ReadonlyArray<number>>
  /** Per group, the largest probability. */
  readonly confidence: ReadonlyArray<number>
  /** Per kept layer, its group's confidence (1 for trailing layers). */
  readonly slotProbability: ReadonlyArray<number>
}

/** The decision of logits [G, C] (row-major), as the reference's final decision. */
export function decide(scheme: Scheme.Scheme, depth: number, logits: ArrayLike<number>, scaling: number): Decided {
  const { groups, rest } = Scheme.groups(scheme, depth)
  const c = Scheme.candidates(scheme).length
  if (logits.length !== groups.length * c) throw new Error(`${logits.length} logits for ${groups.length} groups of ${c} candidates`)
  const rows = groups.map((_, g) => Array.from({ length: c }, (_, j) => logits[g * c + j]!))
  const choice = rows.map((row) => row.indexOf(Math.max(...row)))
  const probabilities = rows.map((row) => {
    const top = Math.max(...row)
    const e = row.map((v) => Math.exp(scaling * (v - top)))
    const total = e.reduce((a, b) => a + b, 0)
    return e.map((v) => v / total)
  })
  const confidence = probabilities.map((p) => Math.max(...p))
  return {
    choice,
    kept: Scheme.keptLayers(scheme, depth, choice),
    probabilities,
    confidence,
    slotProbability: [...confidence.flatMap((p) => Array.from({ length: scheme.n }, () => p)), ...rest.map(() => 1)]
  }
}

const snapshot = (step: number, d: Decided): Snapshot => ({ step, kept: [...d.kept], probability: [...d.slotProbability] })

/** The JSON part of the loop state: AdamW's step count and the logged decisions. */
export const LoopData = Schema.Struct({ adamStep: Schema.Int, history: Schema.Array(Snapshot) })
export type LoopData = typeof LoopData.Type

/** The loop's tensors: gate logits, their EMA, ΔW (absent when Frozen) and the AdamW moments of {gates, delta}. */
export type LoopTensors = {
  readonly logits: tf.Tensor
  readonly ema: tf.Tensor
  readonly delta?: ParamTree.ParamTree
  readonly m: ParamTree.ParamTree
  readonly v: ParamTree.ParamTree
}

export type LoopState = Checkpoint.State<LoopData, LoopTensors>

/** What the optimiser trains: the gate logits and ΔW. */
type Trainable = { readonly gates: tf.Tensor; readonly delta?: ParamTree.ParamTree }

const isGate = (key: string) => key === "gates"

/**
 * The tree rebuilt from its keys in sorted order: the order a checkpoint
 * restores it in (safetensors sorts keys). The gradient norm sums the leaves
 * in tree order, so a fresh run must use the order a resumed one sees, or
 * the two round differently once clipping is active.
 */
const canonical = (tree: ParamTree.ParamTree): ParamTree.ParamTree =>
  ParamTree.unflatten(ParamTree.flattenTensors(tree).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) as ParamTree.ParamTree

export interface Setup {
  readonly stack: BlockStack
  /** The teacher's weights on the device (not released by the session). */
  readonly params: ParamTree.ParamTree
  readonly scheme: Scheme.Scheme
  readonly options: Options
  readonly seed: number
  readonly source: LatentSource
}

/** A mask-learning run: its state before step 0, one step, and what EMA logits decide. */
export interface Session {
  readonly init: Effect.Effect<LoopState>
  /** Step `index` from the state after `index` steps (what Checkpoint.loop calls). */
  readonly step: (state: LoopState, index: number) => Effect.Effect<{ readonly state: LoopState; readonly loss: number }, ComputeError>
  readonly decide: (ema: ArrayLike<number>) => Decided
}

export const session = Effect.fn("Learnable.session")(function*(setup: Setup): Effect.fn.Return<Session, never, Compute> {
  const compute = yield* Compute
  const { stack, params, scheme, options: o, seed } = setup
  const depth = stack.depth
  const groupCount = Scheme.groups(scheme, depth).groups.length
  const candidateCount = Scheme.candidates(scheme).length
  const tau = Schedules.linear({ from: o.tau[0], to: o.tau[1], steps: o.iterations - 1 })
  const update: Update.Settings = {
    optimiser: {
      ...AdamW.defaults,
      groups: [
        { name: "gates", includes: isGate, lr: o.gateLr, weightDecay: 0 },
        { name: "delta", includes: () => true, lr: o.weightLr, weightDecay: 0 }
      ]
    },
    maxGradNorm: o.maxGradNorm,
    emaDecay: o.emaDecay
  }
  const frozen = stack.split(params).frozen
  const loraScale = o.alpha / o.rank
  const gumbel = Rng.stream(seed, "prune/gumbel")
  const decideFrom = (values: ArrayLike<number>) => decide(scheme, depth, values, o.scaling)

  const init = Effect.sync((): LoopState => {
    const logits = tf.zeros([groupCount, candidateCount])
    const delta = o.update === "lora"
      ? canonical(HostTensor.treeToTensors(Lora.init(stack.linears, o.rank, seed)))
      : o.update === "full"
      ? canonical(ParamTree.clone(stack.split(params).trainable))
      : undefined
    const trainable = { gates: logits, ...(delta === undefined ? {} : { delta }) }
    const adam = AdamW.init(trainable)
    return {
      tensors: { logits, ema: tf.clone(logits), ...(delta === undefined ? {} : { delta }), m: adam.m, v: adam.v },
      data: { adamStep: 0, history: [snapshot(0, decideFrom(new Float32Array(groupCount * candidateCount)))] }
    }
  })

  const step = (state: LoopState, index: number) =>
    compute.scoped(Effect.gen(function*() {
      const t = state.tensors
      const batch = setup.source.batch({ seed, batchSize: o.batchSize }, index)
      const draws = stack.draws(batch.labels, { seed, step: index, purpose: "prune" })
      const b = batch.shape[0]
      const out = tidy(() => {
        const x = tf.tensor4d(batch.latents, [...batch.shape] as [number, number, number, number])
        const noise = Rng.gumbelTensor(gumbel, index, [b, groupCount, candidateCount]) as tf.Tensor3D
        const temperature = tau(index)
        const trainable: Trainable = { gates: t.logits, ...(t.delta === undefined ? {} : { delta: t.delta }) }
        const next = Update.apply(update, { params: trainable, optimiser: { step: state.data.adamStep, m: t.m, v: t.v }, ema: { gates: t.ema } }, (p) => {
          const { gates: logits, delta } = p
          const gates = Gumbel.gates(Gumbel.sample(logits as tf.Tensor2D, noise, temperature, o.scaling), scheme, depth)
          const weights = o.update === "full" ? stack.join(delta!, frozen) : params
          return stack.loss(weights, x, draws, { gates, ...(o.update === "lora" ? { linear: Lora.linear(delta!, loraScale) } : {}) })
        })
        const updated = next.state.params
        const tensors: LoopTensors = {
          logits: updated.gates,
          ema: next.state.ema!.gates,
          ...(updated.delta === undefined ? {} : { delta: updated.delta }),
          m: next.state.optimiser.m,
          v: next.state.optimiser.v
        }
        const value = next.loss
        return { value, tensors }
      })
      const loss = (yield* compute.read(out.value))[0]!
      const done = index + 1
      const log = done % o.logEvery === 0 || done === o.iterations
      const history = log ? [...state.data.history, snapshot(done, decideFrom(yield* compute.read(out.tensors.ema)))] : state.data.history
      return { state: { tensors: out.tensors, data: { adamStep: state.data.adamStep + 1, history } }, loss }
    }))

  return { init, step, decide: decideFrom }
})

export const method = Pruner.make({
  name: "learnable",
  description: "TinyFusion: learn N:M layer masks jointly with a weight update (LoRA, Full or Frozen)",
  module: import.meta.url,
  options: Options,
  evidence: Evidence,
  prune: Effect.fn("Learnable.prune")(function*(request: Pruner.Request<Options>) {
    const { target, options: o } = request
    const scheme = target.scheme
    if (scheme === undefined) {
      return yield* new Pruner.UnsupportedTarget({ method: "learnable", target: Selection.describe(target), reason: "it learns N:M masks; give a scheme such as 1:2" })
    }
    const compute = yield* Compute
    const run = yield* session({ ...request, scheme })
    const result = yield* Checkpoint.loop(request.ctx, {
      steps: o.iterations,
      every: o.checkpointEvery,
      data: LoopData,
      init: run.init,
      step: run.step,
      nonFinite: "skip"
    })
    const final = result.state.tensors
    const emaValues = yield* compute.read(final.ema)
    const host = yield* HostTensor.treeFromTensors({ logits: final.logits, ema: final.ema })
    ParamTree.dispose(final)
    yield* request.ctx.writeTensors("gates.safetensors", host)
    const decided = run.decide(emaValues)
    const confidence = decided.confidence.reduce((a, p) => a + p, 0) / decided.confidence.length
    yield* request.ctx.metric("finalLoss", result.lastLoss)
    yield* request.ctx.metric("skippedSteps", result.skipped.length)
    return {
      kept: decided.kept,
      evidence: { probabilities: decided.probabilities.map((p) => [...p]), confidence, history: [...result.state.data.history] }
    }
  })
})
