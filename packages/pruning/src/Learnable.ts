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
import { Checkpoint } from "@tinyfusion/core"
import { AdamW, Compute, type ComputeError, Ema, Gradients, HostTensor, ParamTree, Rng, Schedules, tf, tidy } from "@tinyfusion/tensor"
import type { BlockStack } from "./BlockStack.ts"
import { type Snapshot, Snapshot as SnapshotSchema } from "./Decision.ts"
import * as Gumbel from "./Gumbel.ts"
import type { LatentSource } from "./LatentSource.ts"
import * as Lora from "./Lora.ts"
import * as Pruner from "./Pruner.ts"
import * as Scheme from "./Scheme.ts"
import * as Selection from "./Selection.ts"

const Positive = Schema.Finite.check(Schema.isGreaterThan(0))
const withDefault = <S extends Schema.Top>(schema: S, value: S["Encoded"]) => schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))

export const Options = Schema.Struct({
  /** The co-optimised weight update ΔW. */
  update: withDefault(Schema.Literals(["lora", "full", "frozen"]), "lora"),
  rank: withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 8),
  /** LoRA's α; the update is scaled by α / rank (16 / 8 = 2, as the reference's alpha = 2·rank). */
  alpha: withDefault(Positive, 16),
  /** Gumbel temperature, linear from the first to the second over the run. */
  tau: withDefault(Schema.Tuple([Positive, Positive]), [4, 0.1]),
  /** Logit scaling of the sampling and of the confidence. */
  scaling: withDefault(Positive, 100),
  gateLr: withDefault(Positive, 1e-3),
  /** Learning rate of ΔW (LoRA or, with Full, the weights). */
  weightLr: withDefault(Positive, 1e-4),
  maxGradNorm: withDefault(Positive, 1),
  emaDecay: withDefault(Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1)), 0.999),
  batchSize: withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 64),
  /** Record the decision every this many steps (and at the start and the end). */
  logEvery: withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)), 10),
  /** Checkpoint every this many steps (0: never). */
  checkpointEvery: withDefault(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), 100)
})
export type Options = typeof Options.Type

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
export const LoopData = Schema.Struct({ adamStep: Schema.Int, history: Schema.Array(SnapshotSchema) })
export type LoopData = typeof LoopData.Type

/** The loop's tensors: gate logits, their EMA, ΔW (absent when Frozen) and the AdamW moments of {gates, delta}. */
interface LoopTensors {
  readonly logits: tf.Tensor2D
  readonly ema: tf.Tensor2D
  readonly delta?: ParamTree.ParamTree
  readonly m: ParamTree.ParamTree
  readonly v: ParamTree.ParamTree
}

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
  /** Steps of the run (the τ schedule spans them). */
  readonly iterations: number
  readonly seed: number
  readonly source: LatentSource
}

/** A mask-learning run: its state before step 0, one step, and what EMA logits decide. */
export interface Session {
  readonly init: Effect.Effect<Checkpoint.State<LoopData>>
  /** Step `index` from the state after `index` steps (what Checkpoint.loop calls). */
  readonly step: (
    state: Checkpoint.State<LoopData>,
    index: number
  ) => Effect.Effect<{ readonly state: Checkpoint.State<LoopData>; readonly loss: number }, ComputeError>
  readonly decide: (ema: ArrayLike<number>) => Decided
}

export const session = Effect.fn("Learnable.session")(function*(setup: Setup): Effect.fn.Return<Session, never, Compute> {
  const compute = yield* Compute
  const { stack, params, scheme, options: o, seed } = setup
  const depth = stack.depth
  const groupCount = Scheme.groups(scheme, depth).groups.length
  const candidateCount = Scheme.candidates(scheme).length
  const tau = Schedules.linear({ from: o.tau[0], to: o.tau[1], steps: setup.iterations - 1 })
  const optimiser: AdamW.Config = {
    ...AdamW.defaults,
    groups: [
      { name: "gates", includes: isGate, lr: o.gateLr, weightDecay: 0 },
      { name: "delta", includes: () => true, lr: o.weightLr, weightDecay: 0 }
    ]
  }
  const frozen = stack.split(params).frozen
  const loraScale = o.alpha / o.rank
  const gumbel = Rng.stream(seed, "prune/gumbel")
  const decideFrom = (values: ArrayLike<number>) => decide(scheme, depth, values, o.scaling)

  const init = Effect.sync((): Checkpoint.State<LoopData> => {
    const logits = tf.zeros([groupCount, candidateCount]) as tf.Tensor2D
    const delta = o.update === "lora"
      ? canonical(HostTensor.treeToTensors(Lora.init(stack.linears, o.rank, seed)))
      : o.update === "full"
      ? canonical(ParamTree.clone(stack.split(params).trainable))
      : undefined
    const trainable = { gates: logits, ...(delta === undefined ? {} : { delta }) }
    const adam = AdamW.init(trainable)
    const tensors: LoopTensors = { logits, ema: tf.clone(logits), ...(delta === undefined ? {} : { delta }), m: adam.m, v: adam.v }
    return {
      tensors: tensors as unknown as ParamTree.ParamTree,
      data: { adamStep: 0, history: [snapshot(0, decideFrom(new Float32Array(groupCount * candidateCount)))] }
    }
  })

  const step = (state: Checkpoint.State<LoopData>, index: number) =>
    compute.scoped(Effect.gen(function*() {
      const t = state.tensors as unknown as LoopTensors
      const batch = setup.source.batch({ seed, batchSize: o.batchSize }, index)
      const draws = stack.draws(batch.labels, { seed, step: index, purpose: "prune" })
      const b = batch.shape[0]
      const out = tidy(() => {
        const x = tf.tensor4d(batch.latents, [...batch.shape] as [number, number, number, number])
        const noise = Rng.gumbelTensor(gumbel, index, [b, groupCount, candidateCount]) as tf.Tensor3D
        const temperature = tau(index)
        const trainable = { gates: t.logits, ...(t.delta === undefined ? {} : { delta: t.delta }) }
        const { value, grads } = Gradients.valueAndGrad((p) => {
          const { gates: logits, delta } = p as { gates: tf.Tensor2D; delta?: ParamTree.ParamTree }
          const gates = Gumbel.gates(Gumbel.sample(logits, noise, temperature, o.scaling), scheme, depth)
          const weights = o.update === "full" ? stack.join(delta!, frozen) : params
          return stack.loss(weights, x, draws, { gates, ...(o.update === "lora" ? { linear: Lora.linear(delta!, loraScale) } : {}) })
        }, trainable)
        const clipped = Gradients.clipByGlobalNorm(grads, o.maxGradNorm)
        const next = AdamW.update(optimiser, { step: state.data.adamStep, m: t.m, v: t.v }, trainable, clipped.grads)
        const updated = next.params as { gates: tf.Tensor2D; delta?: ParamTree.ParamTree }
        const ema = Ema.update({ gates: t.ema }, { gates: updated.gates }, o.emaDecay) as { gates: tf.Tensor2D }
        const tensors: LoopTensors = {
          logits: updated.gates,
          ema: ema.gates,
          ...(updated.delta === undefined ? {} : { delta: updated.delta }),
          m: next.state.m,
          v: next.state.v
        }
        return { value, tensors }
      })
      const loss = (yield* compute.read(out.value))[0]!
      const done = index + 1
      const log = done % o.logEvery === 0 || done === setup.iterations
      const history = log ? [...state.data.history, snapshot(done, decideFrom(yield* compute.read(out.tensors.ema)))] : state.data.history
      return {
        state: { tensors: out.tensors as unknown as ParamTree.ParamTree, data: { adamStep: state.data.adamStep + 1, history } },
        loss
      }
    }))

  return { init, step, decide: decideFrom }
})

export const method: Pruner.Method = {
  name: "learnable",
  description: "TinyFusion: learn N:M layer masks jointly with a weight update (LoRA, Full or Frozen)",
  prune: Effect.fn("Learnable.prune")(function*(request: Pruner.Request) {
    const o = yield* Pruner.options("learnable", Options, request.options)
    const { stack, target } = request
    const scheme = target.scheme
    if (scheme === undefined) {
      return yield* new Pruner.UnsupportedTarget({ method: "learnable", target: Selection.describe(target), reason: "it learns N:M masks; give a scheme such as 1:2" })
    }
    if (request.iterations < 1) {
      return yield* new Pruner.InvalidOptions({ method: "learnable", issue: `needs at least 1 iteration, got ${request.iterations}` })
    }
    const compute = yield* Compute
    const run = yield* session({ ...request, scheme, options: o })
    const result = yield* Checkpoint.loop(request.ctx, {
      steps: request.iterations,
      every: o.checkpointEvery,
      data: LoopData,
      init: run.init,
      step: run.step,
      nonFinite: "skip"
    })
    const final = result.state.tensors as unknown as LoopTensors
    const emaValues = yield* compute.read(final.ema)
    const host = yield* HostTensor.treeFromTensors({ logits: final.logits, ema: final.ema })
    ParamTree.dispose(result.state.tensors)
    yield* request.ctx.writeTensors("gates.safetensors", host)
    const decided = run.decide(emaValues)
    const confidence = decided.confidence.reduce((a, p) => a + p, 0) / decided.confidence.length
    yield* request.ctx.metric("confidence", confidence)
    yield* request.ctx.metric("final_loss", result.lastLoss)
    yield* request.ctx.metric("skipped_steps", result.skipped.length)
    return {
      method: "learnable",
      teacherDepth: stack.depth,
      kept: [...decided.kept],
      ...Selection.groupsOf(target, stack.depth),
      probabilities: decided.probabilities.map((p) => [...p]),
      confidence,
      history: [...result.state.data.history]
    }
  })
}
