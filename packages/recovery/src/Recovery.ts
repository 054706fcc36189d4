/**
 * The recovery objective (paper §4.4, supplementary §8), as a task of the
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
 */
import { Effect, Schema } from "effect"
import { Network, type Trainer, Training } from "@tinyfusion/diffusion"
import { type Config, DiT, type ModelArtifact } from "@tinyfusion/models"
import { type HostTensor, type ParamTree, Schedules, tf } from "@tinyfusion/tensor"
import * as Alignment from "./Alignment.ts"
import * as Distill from "./Distill.ts"

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))
const NonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

export const Strategy = Schema.Literals(["finetune", "logits-kd", "repkd", "masked-kd"])
export type Strategy = typeof Strategy.Type

/**
 * Which teacher block each student layer is distilled towards: from the
 * pruning decision (the teacher indices of the student's layers and, for an
 * N:M decision, its groups), or the reference code's fixed mapping.
 */
export const AlignmentConfig = Schema.Union([
  Schema.Literal("fixed"),
  Schema.Struct({ kept: Schema.Array(Index), groups: Schema.optional(Schema.Array(Schema.Array(Index))) })
])
export type AlignmentConfig = typeof AlignmentConfig.Type

export const Loss = Schema.Struct({
  strategy: Strategy,
  /** Masked KD's threshold: elements with |x − μ| ≥ kσ are ignored. */
  k: Schema.optional(Schema.Finite.check(Schema.isGreaterThan(0))),
  alphaKd: NonNegative,
  alphaGt: NonNegative,
  /** The Rep weight at step 0, decayed linearly to 0 at the last step. */
  beta: NonNegative,
  alignment: AlignmentConfig
}).check(Schema.makeFilter((l) =>
  l.strategy === "masked-kd" && l.k === undefined
    ? "masked-kd needs a threshold k"
    : l.strategy !== "masked-kd" && l.k !== undefined
    ? `k is a masked-kd threshold, not a ${l.strategy} setting`
    : undefined
))
export type Loss = typeof Loss.Type

/** The paper's weights: α_KD 0.9, α_GT 0.1, β 1e-2 (SiT: 2e-4; MAR as DiT, Table 6). */
export const paper = (
  family: ModelArtifact.Family | "mar",
  strategy: Strategy,
  alignment: AlignmentConfig,
  k?: number
): Loss => ({
  strategy,
  ...(strategy === "masked-kd" ? { k: k ?? 2 } : {}),
  alphaKd: 0.9,
  alphaGt: 0.1,
  beta: family === "sit" ? 2e-4 : 1e-2,
  alignment
})

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

/** Whether the strategy distils hidden states. */
export const usesRep = (strategy: Strategy): boolean => strategy === "repkd" || strategy === "masked-kd"

/** β at each step: linear from `beta` at step 0 to 0 at `steps`. */
export const beta = (loss: Loss, steps: number): Schedules.Schedule => Schedules.linear({ from: loss.beta, to: 0, steps })

/** An alignment that does not fit the teacher and student. */
export class InvalidAlignment extends Schema.TaggedError<InvalidAlignment>()("InvalidAlignment", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid RepKD alignment: ${this.reason}`
  }
}

/** The aligned (student layer, teacher block) pairs. */
export const pairs = (
  alignment: AlignmentConfig,
  studentDepth: number,
  teacherDepth: number
): Effect.Effect<ReadonlyArray<Alignment.Pair>, InvalidAlignment> => {
  const invalid = (reason: string) => Effect.fail(new InvalidAlignment({ reason }))
  if (alignment === "fixed") {
    return teacherDepth % studentDepth === 0
      ? Effect.succeed(Alignment.fixed(studentDepth, teacherDepth))
      : invalid(`the fixed mapping needs the teacher depth ${teacherDepth} to be a multiple of the student depth ${studentDepth}`)
  }
  const { kept, groups } = alignment
  if (kept.length !== studentDepth) return invalid(`${kept.length} kept blocks for a student of depth ${studentDepth}`)
  if (kept.some((k, i) => k >= teacherDepth || (i > 0 && k <= kept[i - 1]!))) {
    return invalid(`kept blocks [${kept}] are not ascending within 0..${teacherDepth - 1}`)
  }
  if (groups?.some((g) => g.some((layer) => layer >= teacherDepth))) return invalid(`a group names a layer outside 0..${teacherDepth - 1}`)
  return Effect.succeed(Alignment.fromDecision(kept, teacherDepth, groups))
}

export interface Pass {
  readonly terms: Training.LossTerms
  /** hidden[i] is block i's input, hidden[depth] the last block's output. */
  readonly hidden: ReadonlyArray<tf.Tensor3D>
}

/** The objective's loss of a model on a step's batch and draws, keeping every block's hidden state. */
export const pass = (objective: Training.Objective, config: Config.Config, params: ParamTree.ParamTree, batch: Trainer.Batch): Pass => {
  let hidden: ReadonlyArray<tf.Tensor3D> = []
  const network: Network.Network = (x, t, y) => {
    const out = DiT.forwardHidden(config, params, { x, t, y })
    hidden = out.hidden
    return objective._tag === "sit" ? Network.velocity(config, out.output) : out.output
  }
  const terms = Training.networkLoss(objective, network, batch.x, batch.draws)
  return { terms, hidden }
}

export interface Models {
  readonly teacher: { readonly config: Config.Config; readonly params: ParamTree.ParamTree }
  readonly student: { readonly config: Config.Config; readonly init: HostTensor.HostTree }
  /** Aligned (student layer, teacher block) pairs; used by repkd and masked-kd. */
  readonly pairs: ReadonlyArray<Alignment.Pair>
}

/**
 * The recovery task of `steps` steps: its terms are gt, and kd and rep when
 * the strategy has them (unweighted; the loss weighs them).
 */
export const task = (objective: Training.Objective, loss: Loss, steps: number, models: Models): Trainer.Task => {
  const { teacher, student } = models
  const betaAt = beta(loss, steps)
  return {
    data: student.config,
    init: student.init,
    draws: (labels, at) => Training.draws(objective, student.config, labels, at),
    loss: (batch) => {
      if (loss.strategy === "finetune") {
        return (params) => {
          const gt = Training.loss(objective, student.config, params, batch.x, batch.draws).loss
          return { loss: gt, terms: { gt } }
        }
      }
      const target = pass(objective, teacher.config, teacher.params, batch)
      const weight = betaAt(batch.step)
      return (params) => {
        const own = pass(objective, student.config, params, batch)
        const gt = own.terms.loss
        const kd = Distill.outputKd(own.terms.output, target.terms.output)
        const logits = tf.add(tf.mul(kd, loss.alphaKd), tf.mul(gt, loss.alphaGt)) as tf.Scalar
        if (!usesRep(loss.strategy)) return { loss: logits, terms: { gt, kd } }
        const rep = Distill.repLoss(
          models.pairs.map((p) => [own.hidden[p.student + 1]!, target.hidden[p.teacher + 1]!] as const),
          loss.strategy === "masked-kd" ? loss.k : undefined
        )
        return { loss: tf.add(logits, tf.mul(rep, weight)) as tf.Scalar, terms: { gt, kd, rep } }
      }
    }
  }
}

/**
 * Table 5's "Init. Distill. Loss" from a run's curve: the Rep term at step 0
 * for repkd and masked-kd; for logits-kd (a "-" in the paper) the output
 * KD term at step 0; undefined for fine-tuning or when step 0 was not
 * recorded (skipped for a non-finite loss).
 */
export const initialDistillLoss = (strategy: Strategy, curve: Trainer.Curve): number | undefined => {
  const first = curve[0]
  if (first === undefined || first.step !== 0 || strategy === "finetune") return undefined
  return usesRep(strategy) ? first.terms["rep"] : first.terms["kd"]
}
