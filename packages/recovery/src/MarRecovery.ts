/**
 * Recovery of a pruned MAR (TinyMAR-D16: paper §4.2, supplementary Table 6):
 * a MAR teacher and student bound for the strategies (Recovery.Models), so
 * every strategy recovers a MAR with the DiT recovery's losses and settings:
 *
 *   GT    MAR's training loss (masked rows of DiffLoss)
 *   KD    MSE between the student's and the teacher's head outputs (ε, v)
 *         on the masked rows — the rows whose tokens the model predicts
 *   Rep   hidden-state MSE (masked: within kσ) between each student block
 *         and its aligned teacher block, which must sit in the same half
 *         (encoder blocks see the unmasked tokens, decoder blocks every
 *         position)
 *
 * Teacher and student see the same draws: orders, masked count, rows'
 * timesteps and noise, dropped labels, and dropout masks of the same modules.
 * The recovery stage (RecoveryStage) takes a MAR as it takes a DiT.
 */
import { Effect } from "effect"
import { DiffLoss, MarTraining, type Trainer } from "@tinyfusion/diffusion"
import { type Mar, MarConfig, type Models as StoredModels } from "@tinyfusion/models"
import { type HostTensor, type ParamTree, tf } from "@tinyfusion/tensor"
import type * as Alignment from "./Alignment.ts"
import * as Recovery from "./Recovery.ts"

type Config = MarConfig.MarConfig

/** Which half of its stack a block is in. */
const half = (config: Config, block: number) => (block < config.encoderDepth ? "encoder" : "decoder")

/** Fails unless every aligned pair joins blocks of the same half. */
export const checkPairs = (teacher: Config, student: Config, pairs: ReadonlyArray<Alignment.Pair>) =>
  Effect.forEach(pairs, (p) =>
    half(student, p.student) === half(teacher, p.teacher)
      ? Effect.void
      : Effect.fail(new Recovery.InvalidAlignment({
        reason: `student block ${p.student} (${half(student, p.student)}) is aligned with teacher block ${p.teacher} (${half(teacher, p.teacher)})`
      })), { discard: true })

/** Teacher and student must differ in their block counts only. */
export const compatible = (teacher: Config, student: Config) => {
  const differ = (Object.keys(teacher) as Array<keyof Config>)
    .filter((k) => k !== "encoderDepth" && k !== "decoderDepth" && teacher[k] !== student[k])
  return differ.length === 0
    ? Effect.void
    : Effect.fail(new Recovery.IncompatibleModels({ reason: `student ${MarConfig.describe(student)} and teacher ${MarConfig.describe(teacher)} differ in ${differ.join(", ")}` }))
}

/** Σ over masked rows of the mean squared difference of two row outputs, / masked rows. */
const maskedKd = (student: tf.Tensor2D, teacher: tf.Tensor, mask: tf.Tensor1D): tf.Scalar =>
  DiffLoss.maskedMean(tf.mean(tf.squaredDifference(student, teacher), 1) as tf.Tensor1D, mask)

/** Training's forward of a MAR on a step's batch (its draws' masking and dropout). */
const forward = (diffloss: DiffLoss.DiffLoss, config: Config, params: ParamTree.ParamTree, batch: Trainer.Batch) => {
  const d = MarTraining.marDraws(batch.draws)
  const options: Mar.Options = { dropout: MarTraining.dropout(d.at) }
  return MarTraining.loss(diffloss, config, params, batch.x, d, options)
}

/** A MAR's forward as a strategy sees it: KD over the masked rows, block i's output. */
const pass = (diffloss: DiffLoss.DiffLoss, config: Config, params: ParamTree.ParamTree, batch: Trainer.Batch): Recovery.Pass => {
  const terms = forward(diffloss, config, params, batch)
  return {
    gt: terms.loss,
    output: terms.output,
    kd: (teacher) => maskedKd(terms.output, teacher.output, terms.mask),
    block: (i) => terms.hidden.blocks[i]!.output
  }
}

const width = (c: Config) => `${c.encoderEmbedDim}/${c.decoderEmbedDim}`

/** A MAR teacher (its weights on the device) and student, with the DiffLoss of the student's sampling steps. */
export const models = Effect.fn("MarRecovery.models")(function*(
  teacher: { readonly key: string; readonly config: Config; readonly params: ParamTree.ParamTree },
  student: { readonly config: Config; readonly init: HostTensor.HostTree; readonly blocks?: StoredModels.Blocks | undefined }
) {
  yield* compatible(teacher.config, student.config)
  const diffloss = yield* DiffLoss.make(student.config.numSamplingSteps)
  const bound: Recovery.Models = {
    teacher: {
      key: teacher.key,
      depth: MarConfig.depth(teacher.config),
      width: width(teacher.config),
      pass: (batch) => pass(diffloss, teacher.config, teacher.params, batch)
    },
    student: {
      depth: MarConfig.depth(student.config),
      width: width(student.config),
      data: student.config,
      init: student.init,
      draws: (labels, at) => MarTraining.draws(student.config, labels, at),
      loss: (params, batch) => forward(diffloss, student.config, params, batch).loss,
      pass: (params, batch) => pass(diffloss, student.config, params, batch),
      blocks: student.blocks
    },
    // Table 6: MAR's recovery takes DiT's weights.
    paperBeta: 1e-2,
    checkPairs: (pairs) => checkPairs(teacher.config, student.config, pairs)
  }
  return bound
})
