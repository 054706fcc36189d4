/**
 * The recovery strategies (paper §4.4, supplementary §8), each a task of the
 * shared training loop (packages/diffusion Trainer):
 *
 *   finetune    the plain diffusion loss GT (ε-MSE + vb, or SiT's velocity MSE)
 *   logits-kd   α_KD·KD + α_GT·GT, KD = MSE(student output, teacher output)
 *   repkd       + β·Rep, Rep = Σ over aligned pairs of the hidden-state MSE
 *   masked-kd   Rep over the elements within kσ of their sample's mean, in
 *               student and teacher alike (Distill.hiddenLoss)
 *
 * with β decayed linearly to 0 over the run. The teacher runs on the step's
 * draws — the same x_t, timesteps and dropped labels as the student — once
 * per step, outside the gradient.
 *
 * A strategy describes itself (core Method): its options with the paper's
 * settings as defaults, and its evidence — Table 5's initial distillation
 * loss. The `Strategies` registry holds them by name; adding one is one file.
 */
import { Effect, Schema } from "effect"
import { Method } from "@tinyfusion/core"
import { Network, type Trainer, Training } from "@tinyfusion/diffusion"
import { type Config, DiT, type Models as StoredModels } from "@tinyfusion/models"
import { type HostTensor, type ParamTree, Schedules, tf } from "@tinyfusion/tensor"
import * as Alignment from "./Alignment.ts"
import * as Distill from "./Distill.ts"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))
const { option } = Method

/** The paper's optimiser: AdamW lr 2e-4, weight decay 0, cosine to 1e-4, clip 1.0, EMA 0.9999; a non-finite loss ends the run. */
export const paperTraining = (steps: number, batchSize: number, seed: number): Trainer.Settings => ({
  steps,
  batchSize,
  seed,
  lr: 2e-4,
  lrFloor: 1e-4,
  weightDecay: 0,
  maxGradNorm: 1,
  emaDecay: 0.9999,
  checkpointEvery: 1000,
  curveEvery: 50,
  nonFinite: "fail"
})

/** A forward of a model on a step's batch, as a strategy sees it. */
export interface Pass {
  /** The family's training loss on the batch (the GT term). */
  readonly gt: tf.Scalar
  /** The network's prediction, what output KD matches. */
  readonly output: tf.Tensor
  /** Output KD of this forward (the student's) towards the teacher's on the same draws. */
  readonly kd: (teacher: Pass) => tf.Scalar
  /** Block i's output hidden state [B, T, D]. */
  readonly block: (i: number) => tf.Tensor3D
}

/**
 * The models a strategy trains, bound to their family (a DiT or SiT under
 * its objective here, a MAR in MarRecovery): the teacher's forward with its
 * weights on the device, and the student's initial weights, draws, loss and
 * forward. A strategy knows no family.
 */
export interface Models {
  readonly teacher: {
    readonly key: string
    readonly depth: number
    /** Its hidden widths, for messages and the hidden-state strategies' check. */
    readonly width: string
    readonly pass: (batch: Trainer.Batch) => Pass
  }
  readonly student: {
    readonly depth: number
    readonly width: string
    /** What the loop needs of it: the latents' shape, its initial weights, a step's draws. */
    readonly data: Trainer.Task["data"]
    readonly init: HostTensor.HostTree
    readonly draws: Trainer.Task["draws"]
    /** The plain training loss (fine-tuning). */
    readonly loss: (params: ParamTree.ParamTree, batch: Trainer.Batch) => tf.Scalar
    readonly pass: (params: ParamTree.ParamTree, batch: Trainer.Batch) => Pass
    /** The teacher blocks the student is made of, when its artifact records them. */
    readonly blocks?: StoredModels.Blocks | undefined
  }
  /** The paper's Rep weight at step 0 for the family: 1e-2 (DiT, MAR), 2e-4 (SiT). */
  readonly paperBeta: number
  /** Fails unless aligned pairs fit the family (a MAR's stay within their half). */
  readonly checkPairs: (pairs: ReadonlyArray<Alignment.Pair>) => Effect.Effect<void, InvalidAlignment>
}

export interface Setup<O> {
  /** Steps of the run (β's schedule spans them). */
  readonly steps: number
  readonly options: O
  readonly models: Models
}

/** A recovery strategy: a Method whose task the loop trains, and whose evidence comes from the run's curve. */
export interface Strategy<O = any, V = any> extends Method.Method<O, V> {
  /** Whether it runs the teacher (a fine-tuning baseline does not). */
  readonly distils: boolean
  readonly task: (setup: Setup<O>) => Effect.Effect<Trainer.Task, InvalidAlignment | IncompatibleModels>
  /** The evidence of a run from its loss curve (its terms at step 0, …). */
  readonly report: (options: O, curve: Trainer.Curve) => V
}

export const kind = "recovery strategy"

/** A strategy, its option and evidence types inferred from its Schemas. */
export const make = <O, V>(strategy: Strategy<O, V>): Strategy<O, V> => strategy

/** A strategy's options from a config: unknown fields are named, missing ones take their defaults. */
export const options = <O>(strategy: Strategy<O, any>, given: unknown) => Method.options(kind, strategy, given)

/** A teacher and student that do not fit together (another family, another network, or widths a strategy cannot distil across). */
export class IncompatibleModels extends Schema.TaggedError<IncompatibleModels>()("IncompatibleModels", {
  reason: Schema.String
}) {
  override get message(): string {
    return `models do not fit: ${this.reason}`
  }
}

/** An alignment that does not fit the teacher and student. */
export class InvalidAlignment extends Schema.TaggedError<InvalidAlignment>()("InvalidAlignment", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid RepKD alignment: ${this.reason}`
  }
}

/**
 * Which teacher block each student layer is distilled towards: from the
 * pruning decision that made the student (its kept blocks and, for an N:M
 * decision, its groups — the student must be made of this teacher's
 * blocks), the reference code's fixed mapping, or given by hand.
 */
export const AlignmentOption = Schema.Union([
  Schema.Literals(["decision", "fixed"]),
  Schema.Struct({ kept: Schema.Array(Index), groups: Schema.optional(Schema.Array(Schema.Array(Index))) })
])
export type AlignmentOption = typeof AlignmentOption.Type

/** The aligned (student layer, teacher block) pairs of an alignment option. */
export const pairs = (
  alignment: AlignmentOption,
  models: Models
): Effect.Effect<ReadonlyArray<Alignment.Pair>, InvalidAlignment> => {
  const invalid = (reason: string) => Effect.fail(new InvalidAlignment({ reason }))
  const studentDepth = models.student.depth
  const teacherDepth = models.teacher.depth
  if (alignment === "fixed") {
    return teacherDepth % studentDepth === 0
      ? Effect.succeed(Alignment.fixed(studentDepth, teacherDepth))
      : invalid(`the fixed mapping needs the teacher depth ${teacherDepth} to be a multiple of the student depth ${studentDepth}`)
  }
  if (alignment === "decision") {
    const blocks = models.student.blocks
    if (blocks === undefined) return invalid("the student records no blocks of a teacher: give the alignment (fixed, or kept and groups)")
    if (blocks.source !== models.teacher.key) {
      return invalid(`the student is made of blocks of ${blocks.source}, not of the teacher ${models.teacher.key}: use the fixed alignment`)
    }
    return pairs(blocks.groups === undefined ? { kept: blocks.kept } : { kept: blocks.kept, groups: blocks.groups }, models)
  }
  const { kept, groups } = alignment
  if (kept.length !== studentDepth) return invalid(`${kept.length} kept blocks for a student of depth ${studentDepth}`)
  if (kept.some((k, i) => k >= teacherDepth || (i > 0 && k <= kept[i - 1]!))) {
    return invalid(`kept blocks [${kept}] are not ascending within 0..${teacherDepth - 1}`)
  }
  if (groups?.some((g) => g.some((layer) => layer >= teacherDepth))) return invalid(`a group names a layer outside 0..${teacherDepth - 1}`)
  return Effect.succeed(Alignment.fromDecision(kept, teacherDepth, groups))
}

/** A DiT's or SiT's forward under its objective, keeping every block's hidden state. */
export const ditPass = (objective: Training.Objective, config: Config.Config, params: ParamTree.ParamTree, batch: Trainer.Batch): Pass => {
  let hidden: ReadonlyArray<tf.Tensor3D> = []
  const network: Network.Network = (x, t, y) => {
    const out = DiT.forwardHidden(config, params, { x, t, y })
    hidden = out.hidden
    return objective._tag === "sit" ? Network.velocity(config, out.output) : out.output
  }
  const terms = Training.networkLoss(objective, network, batch.x, batch.draws)
  return {
    gt: terms.loss,
    output: terms.output,
    kd: (teacher) => Distill.outputKd(terms.output, teacher.output),
    // hidden[i] is block i's input, hidden[depth] the last block's output.
    block: (i) => hidden[i + 1]!
  }
}

/** A DiT or SiT teacher (its weights on the device) and student, under their objective. */
export const ditModels = (
  objective: Training.Objective,
  teacher: { readonly key: string; readonly config: Config.Config; readonly params: ParamTree.ParamTree },
  student: { readonly config: Config.Config; readonly init: HostTensor.HostTree; readonly blocks?: StoredModels.Blocks | undefined }
): Models => ({
  teacher: {
    key: teacher.key,
    depth: teacher.config.depth,
    width: `${teacher.config.hiddenSize}`,
    pass: (batch) => ditPass(objective, teacher.config, teacher.params, batch)
  },
  student: {
    depth: student.config.depth,
    width: `${student.config.hiddenSize}`,
    data: student.config,
    init: student.init,
    draws: (labels, at) => Training.draws(objective, student.config, labels, at),
    loss: (params, batch) => Training.loss(objective, student.config, params, batch.x, batch.draws).loss,
    pass: (params, batch) => ditPass(objective, student.config, params, batch),
    blocks: student.blocks
  },
  paperBeta: objective._tag === "sit" ? 2e-4 : 1e-2,
  checkPairs: () => Effect.void
})

/** β at each step: linear from `beta` at step 0 to 0 at `steps`. */
export const beta = (from: number, steps: number): Schedules.Schedule => Schedules.linear({ from, to: 0, steps })

/**
 * Distillation of `steps` steps: terms gt and kd, and rep with aligned
 * pairs (unweighted; the loss weighs them). `k` masks Rep (masked KD).
 */
export const distillation = (
  setup: Setup<{ readonly alphaKd: number; readonly alphaGt: number }>,
  rep?: { readonly beta: number; readonly pairs: ReadonlyArray<Alignment.Pair>; readonly k?: number | undefined }
): Trainer.Task => {
  const { options: w, models: { teacher, student } } = setup
  const betaAt = beta(rep?.beta ?? 0, setup.steps)
  return {
    data: student.data,
    init: student.init,
    draws: student.draws,
    loss: (batch) => {
      const target = teacher.pass(batch)
      const weight = betaAt(batch.step)
      return (params) => {
        const own = student.pass(params, batch)
        const gt = own.gt
        const kd = own.kd(target)
        const logits = tf.add(tf.mul(kd, w.alphaKd), tf.mul(gt, w.alphaGt)) as tf.Scalar
        if (rep === undefined) return { loss: logits, terms: { gt, kd } }
        const term = Distill.repLoss(rep.pairs.map((p) => [own.block(p.student), target.block(p.teacher)] as const), rep.k)
        return { loss: tf.add(logits, tf.mul(term, weight)) as tf.Scalar, terms: { gt, kd, rep: term } }
      }
    }
  }
}

/** Table 5's "Init. Distill. Loss": a curve term at step 0 (absent when step 0 was not recorded, e.g. skipped). */
export const InitialDistillLoss = Schema.Struct({ initDistillLoss: Schema.optional(Schema.Finite) })

const initial = (curve: Trainer.Curve, term: string): typeof InitialDistillLoss.Type => {
  const first = curve[0]
  const value = first?.step === 0 ? first.terms[term] : undefined
  return value === undefined ? {} : { initDistillLoss: value }
}

const weights = {
  alphaKd: option(NonNegative, 0.9, "Weight of the output KD term"),
  alphaGt: option(NonNegative, 0.1, "Weight of the diffusion loss (GT)")
}

const repOptions = {
  ...weights,
  beta: option(
    Schema.Union([Schema.Literal("paper"), NonNegative]),
    "paper",
    "Rep weight at step 0, decayed linearly to 0 (paper: 1e-2 for DiT and MAR, 2e-4 for SiT)"
  ),
  alignment: option(AlignmentOption, "decision", "RepKD pairs: from the pruning decision that made the student, the reference's fixed mapping, or {kept, groups}")
}

const repTask = (name: string, setup: Setup<Schema.Schema.Type<Schema.Struct<typeof repOptions>>>, k: number | undefined) =>
  Effect.gen(function*() {
    const { student, teacher } = setup.models
    // A width-pruned student's hidden states have another width than the teacher's.
    if (student.width !== teacher.width) {
      return yield* new IncompatibleModels({
        reason: `${name} matches hidden states, but the student is ${student.width} wide and the teacher ${teacher.width}`
      })
    }
    const aligned = yield* pairs(setup.options.alignment, setup.models)
    yield* setup.models.checkPairs(aligned)
    return distillation(setup, { beta: setup.options.beta === "paper" ? setup.models.paperBeta : setup.options.beta, pairs: aligned, k })
  })

export const finetune = make({
  name: "finetune",
  description: "Fine-tuning: the plain diffusion loss, no teacher",
  module: import.meta.url,
  options: Schema.Struct({}),
  evidence: Schema.Struct({}),
  distils: false,
  task: ({ models: { student } }) =>
    Effect.succeed({
      data: student.data,
      init: student.init,
      draws: student.draws,
      loss: (batch) => (params) => {
        const gt = student.loss(params, batch)
        return { loss: gt, terms: { gt } }
      }
    }),
  report: () => ({})
})

export const logitsKd = make({
  name: "logits-kd",
  description: "Logits KD: α_KD·MSE(student, teacher outputs) + α_GT·GT",
  module: import.meta.url,
  options: Schema.Struct(weights),
  evidence: InitialDistillLoss,
  distils: true,
  task: (setup) => Effect.succeed(distillation(setup)),
  report: (_options, curve) => initial(curve, "kd")
})

export const repKd = make({
  name: "repkd",
  description: "RepKD: logits KD + β·Σ MSE of aligned hidden states",
  module: import.meta.url,
  options: Schema.Struct(repOptions),
  evidence: InitialDistillLoss,
  distils: true,
  task: (setup) => repTask("repkd", setup, undefined),
  report: (_options, curve) => initial(curve, "rep")
})

export const maskedKd = make({
  name: "masked-kd",
  description: "Masked RepKD: RepKD over the elements within kσ of their sample's mean",
  module: import.meta.url,
  options: Schema.Struct({ ...repOptions, k: option(Schema.Finite.check(Schema.isGreaterThan(0)), 2, "Ignore elements with |x − μ| ≥ kσ") }),
  evidence: InitialDistillLoss,
  distils: true,
  task: (setup) => repTask("masked-kd", setup, setup.options.k),
  report: (_options, curve) => initial(curve, "rep")
})
