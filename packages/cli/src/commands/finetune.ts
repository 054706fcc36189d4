/**
 * `tinyfusion finetune`: recovery of a pruned student from a teacher of the
 * store. The teacher is a pretrain artifact (`--teacher <key>`, as
 * `tinyfusion pretrain` prints it; its latents and autoencoder are found
 * from its manifest); the student is the teacher's blocks `--kept`
 * (select-blocks, a pruning decision by hand; by default the first and last
 * block and the rest evenly between, BK-SDM's oracle); the recovery stage
 * fine-tunes or distils it on the teacher's latents. The learnable pruner,
 * the baselines and the tables' grids run in the suite.
 */
import { Console, Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { ArtifactStore, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Pretrain, Trainer } from "@tinyfusion/diffusion"
import { Config } from "@tinyfusion/models"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import * as Table from "../Table.ts"
import { dataFlag, withData } from "./data.ts"

export class FinetuneInput extends Schema.TaggedError<FinetuneInput>()("FinetuneInput", {
  input: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.input}: ${this.reason}`
  }
}

const Select = RecoveryStage.selectBlocks(Pretrain.PretrainStage)
const Recover = RecoveryStage.make({ teacher: Pretrain.PretrainStage, student: Select })

/** The manifest of a committed artifact of `stage`. */
const manifestOf = Effect.fn("finetune.manifestOf")(function*(key: string | undefined, stage: string, role: string) {
  const store = yield* ArtifactStore
  const seen = key === undefined ? undefined : yield* store.inspect(key, { hash: false })
  if (seen?._tag !== "Valid" || seen.manifest.stage !== stage) {
    return yield* new FinetuneInput({ input: role, reason: `${key ?? "(none)"} is not a ${stage} artifact of the store ${store.root}` })
  }
  return seen.manifest
})

/** The teacher artifact and the latents it was trained on, reopened from the store (cache hits). */
export const reopen = Effect.fn("finetune.reopen")(function*(teacherKey: string) {
  const teacherManifest = yield* manifestOf(teacherKey, Pretrain.PretrainStage.name, "--teacher")
  const latentsManifest = yield* manifestOf(teacherManifest.inputs["latents"], Stages.LatentsStage.name, "the teacher's latents")
  const aeManifest = yield* manifestOf(latentsManifest.inputs["autoencoder"], Stages.AutoencoderStage.name, "the latents' autoencoder")
  const ae = yield* Stage.run(Stages.AutoencoderStage, yield* Stage.decodeConfig(Stages.AutoencoderStage, aeManifest.config), {})
  const latents = yield* Stage.run(Stages.LatentsStage, yield* Stage.decodeConfig(Stages.LatentsStage, latentsManifest.config), { autoencoder: ae })
  const teacher = yield* Stage.run(Pretrain.PretrainStage, yield* Stage.decodeConfig(Pretrain.PretrainStage, teacherManifest.config), { latents })
  return { latents, teacher }
})

/** First and last block, the rest evenly between (for 28 → 14: 0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27). */
export const evenly = (depth: number, keep: number): Array<number> =>
  keep === 1 ? [0] : Array.from({ length: keep }, (_, i) => Math.round((i * (depth - 1)) / (keep - 1)))

const list = (text: string, flag: string) =>
  Effect.gen(function*() {
    const values = text.split(",").map((s) => Number(s.trim()))
    if (values.some((v) => !Number.isInteger(v) || v < 0)) return yield* new FinetuneInput({ input: flag, reason: `${text} is not a list of block indices` })
    return values
  })

/** 4 significant digits; small values in exponent form. */
const figure = (x: number | null) => (x === null ? "-" : Math.abs(x) < 1e-3 && x !== 0 ? x.toExponential(3) : x.toPrecision(4))

const optionalFinite = (name: string, description: string) => Flag.Finite(name).pipe(Flag.withDescription(description), Flag.optional)
const some = <K extends string, A>(key: K, value: Option.Option<A>) =>
  Option.match(value, { onNone: () => ({}), onSome: (v) => ({ [key]: v }) as { [P in K]: A } })

export const finetune = Command.make(
  "finetune",
  {
    data: dataFlag,
    teacher: Flag.String("teacher").pipe(Flag.withDescription("Key of the teacher's pretrain artifact (tinyfusion pretrain prints it)")),
    kept: Flag.String("kept").pipe(Flag.withDescription("Teacher blocks the student keeps, e.g. 1,3,5 (default: --keep of them, evenly)"), Flag.optional),
    keep: Flag.Int("keep").pipe(Flag.withDescription("Blocks kept when --kept is not given (default: half)"), Flag.optional),
    strategy: Flag.Literals("strategy", Recovery.Strategy.literals).pipe(
      Flag.withDescription("finetune, logits-kd, repkd or masked-kd"),
      Flag.withDefault("masked-kd" as const)
    ),
    k: Flag.Finite("k").pipe(Flag.withDescription("Masked KD threshold: ignore |x − μ| ≥ kσ"), Flag.withDefault(2)),
    alignment: Flag.Literals("alignment", ["decision", "fixed"]).pipe(
      Flag.withDescription("RepKD pairs: from the kept blocks (and --group-size), or the reference's fixed mapping"),
      Flag.withDefault("decision" as const)
    ),
    groupSize: Flag.Int("group-size").pipe(Flag.withDescription("The decision's N:M groups: M consecutive teacher blocks each"), Flag.optional),
    alphaKd: optionalFinite("alpha-kd", "Weight of the output KD term (default 0.9)"),
    alphaGt: optionalFinite("alpha-gt", "Weight of the diffusion loss (default 0.1)"),
    beta: optionalFinite("beta", "Rep weight at step 0, decayed linearly to 0 (default 1e-2; SiT 2e-4)"),
    steps: Flag.Int("steps").pipe(Flag.withDescription("Recovery steps"), Flag.withDefault(2000)),
    batchSize: Flag.Int("batch-size").pipe(Flag.withDescription("Latents per batch"), Flag.withDefault(256)),
    seed: Flag.Int("seed").pipe(Flag.withDescription("Seed of batches and draws"), Flag.withDefault(0)),
    lr: Flag.Finite("lr").pipe(Flag.withDescription("AdamW learning rate (cosine down to --lr-floor)"), Flag.withDefault(2e-4)),
    lrFloor: Flag.Finite("lr-floor").pipe(Flag.withDescription("Learning rate at the last step"), Flag.withDefault(1e-4)),
    emaDecay: Flag.Finite("ema-decay").pipe(Flag.withDescription("EMA decay (the paper: 0.9999, for 100K steps)"), Flag.withDefault(0.999)),
    clip: Flag.Finite("clip").pipe(Flag.withDescription("Global gradient-norm clip"), Flag.withDefault(1)),
    checkpointEvery: Flag.Int("checkpoint-every").pipe(Flag.withDescription("Steps between checkpoints"), Flag.withDefault(500)),
    curveEvery: Flag.Int("curve-every").pipe(Flag.withDescription("Steps between loss-curve points"), Flag.withDefault(25)),
    nonFinite: Flag.Literals("non-finite", ["skip", "rollback", "fail"]).pipe(
      Flag.withDescription("A non-finite loss: skip the step, roll back, or end the run as diverged"),
      Flag.withDefault("fail" as const)
    )
  },
  (o) =>
    withData(o.data, Effect.gen(function*() {
      const { latents, teacher } = yield* reopen(o.teacher)
      const depth = teacher.output.config.depth
      const kept = Option.isSome(o.kept) ? yield* list(o.kept.value, "--kept") : evenly(depth, Option.getOrElse(o.keep, () => Math.floor(depth / 2)))
      const student = yield* Stage.run(Select, { kept }, { teacher })
      const groups = Option.map(o.groupSize, (m) =>
        Array.from({ length: Math.floor(depth / m) }, (_, g) => Array.from({ length: m }, (_, i) => g * m + i)))
      const alignment: Recovery.AlignmentConfig = o.alignment === "fixed" ? "fixed" : { kept, ...some("groups", groups) }
      const paper = Recovery.paper(teacher.output.family, o.strategy, alignment, o.k)
      const config = yield* Stage.decodeConfig(Recover, {
        loss: { ...paper, ...some("alphaKd", o.alphaKd), ...some("alphaGt", o.alphaGt), ...some("beta", o.beta) },
        training: {
          ...Recovery.paperTraining(o.steps, o.batchSize, o.seed),
          lr: o.lr,
          lrFloor: o.lrFloor,
          emaDecay: o.emaDecay,
          maxGradNorm: o.clip,
          checkpointEvery: o.checkpointEvery,
          curveEvery: o.curveEvery,
          nonFinite: o.nonFinite
        }
      })
      const recovered = yield* Stage.run(Recover, config, { teacher, student, latents })
      const out = recovered.output
      const metric = (name: string, digits: number) => {
        const value = recovered.manifest.metrics[name]
        return value === undefined || value === null ? "-" : Table.fixed(value, digits)
      }
      yield* Console.log(Table.render(
        ["stage", "key", "strategy", "student", "kept", "init. distill. loss", "final loss", "outcome", "samples/s", "loss curve"],
        [[
          "recovery",
          recovered.key,
          `${out.strategy}${o.strategy === "masked-kd" ? ` (${o.k}σ)` : ""}`,
          `${out.family} ${Config.describe(out.config)}`,
          kept.join(","),
          figure(out.initialDistillLoss),
          figure(out.finalLoss),
          out.diverged === undefined ? `${out.steps} steps` : `diverged at step ${out.diverged.step} (loss ${out.diverged.loss})`,
          metric("samples_per_second", 1),
          recovered.path(Trainer.files.plot)
        ]]
      ))
    }))
).pipe(Command.withDescription("Fine-tune or distil a student made of a pretrained teacher's blocks (recovery, Table 5's strategies)"))
