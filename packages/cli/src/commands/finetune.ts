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
import { Config, ModelArtifact } from "@tinyfusion/models"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as Table from "../Table.ts"
import { dataFlag, dataStages, type DataStages } from "./data.ts"

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

/** The family and config of the teacher of that key, from its manifest: what flags are checked against before anything runs. */
export const teacherModel = Effect.fn("finetune.teacherModel")(function*(teacherKey: string) {
  const manifest = yield* manifestOf(teacherKey, Pretrain.PretrainStage.name, "--teacher")
  return yield* Schema.decodeUnknownEffect(ModelArtifact.Identity)(manifest.output).pipe(
    Effect.mapError(() => new FinetuneInput({ input: "--teacher", reason: `${teacherKey} holds no model` }))
  )
})

/** The teacher artifact and the latents it was trained on, reopened from the store (cache hits; data read only to recompute a corrupt one). */
export const reopen = Effect.fn("finetune.reopen")(function*(teacherKey: string, stages: DataStages) {
  const teacherManifest = yield* manifestOf(teacherKey, Pretrain.PretrainStage.name, "--teacher")
  const latentsManifest = yield* manifestOf(teacherManifest.inputs["latents"], Stages.LatentsStage.name, "the teacher's latents")
  const aeManifest = yield* manifestOf(latentsManifest.inputs["autoencoder"], Stages.AutoencoderStage.name, "the latents' autoencoder")
  const ae = yield* Stage.run(stages.autoencoder, yield* Stage.decodeConfig(Stages.AutoencoderStage, aeManifest.config), {})
  const latents = yield* Stage.run(stages.latents, yield* Stage.decodeConfig(Stages.LatentsStage, latentsManifest.config), { autoencoder: ae })
  const teacher = yield* Stage.run(Pretrain.PretrainStage, yield* Stage.decodeConfig(Pretrain.PretrainStage, teacherManifest.config), { latents })
  return { latents, teacher }
})

/** First and last block, the rest evenly between (for 28 → 14: 0, 2, 4, 6, 8, 10, 12, 15, 17, 19, 21, 23, 25, 27). */
export const evenly = (depth: number, keep: number): Array<number> =>
  keep === 1 ? [0] : Array.from({ length: keep }, (_, i) => Math.round((i * (depth - 1)) / (keep - 1)))

/** The student's blocks and the decision's groups, checked against the teacher's depth. */
const studentOf = Effect.fn("finetune.studentOf")(function*(depth: number, o: {
  readonly kept: Option.Option<ReadonlyArray<number>>
  readonly keep: Option.Option<number>
  readonly groupSize: Option.Option<number>
  readonly alignment: "decision" | "fixed"
}) {
  const refuse = (input: string, reason: string) => new FinetuneInput({ input, reason })
  if (Option.isSome(o.kept) && o.kept.value.at(-1)! >= depth) {
    return yield* refuse("--kept", `block ${o.kept.value.at(-1)} is not one of the teacher's ${depth} blocks (0..${depth - 1})`)
  }
  if (Option.isSome(o.keep) && o.keep.value > depth) return yield* refuse("--keep", `${o.keep.value} blocks of a ${depth}-block teacher`)
  const kept = Option.getOrElse(o.kept, () => evenly(depth, Option.getOrElse(o.keep, () => Math.floor(depth / 2))))
  if (Option.isNone(o.groupSize)) return { kept, groups: Option.none<Array<Array<number>>>() }
  const m = o.groupSize.value
  if (o.alignment === "fixed") return yield* refuse("--group-size", "the decision's groups do not apply to --alignment fixed")
  if (depth % m !== 0) return yield* refuse("--group-size", `${m} does not divide the teacher's ${depth} blocks into groups`)
  const groups = Array.from({ length: depth / m }, (_, g) => Array.from({ length: m }, (_, i) => g * m + i))
  return { kept, groups: Option.some(groups) }
})

/** 4 significant digits; small values in exponent form. */
const figure = (x: number | null) => (x === null ? "-" : Math.abs(x) < 1e-3 && x !== 0 ? x.toExponential(3) : x.toPrecision(4))

const optionalWeight = (name: string, description: string) => CheckedFlags.nonNegative(name).pipe(Flag.withDescription(description), Flag.optional)
const some = <K extends string, A>(key: K, value: Option.Option<A>) =>
  Option.match(value, { onNone: () => ({}), onSome: (v) => ({ [key]: v }) as { [P in K]: A } })

export const finetune = Command.make(
  "finetune",
  {
    data: dataFlag,
    teacher: Flag.String("teacher").pipe(Flag.withDescription("Key of the teacher's pretrain artifact (tinyfusion pretrain prints it)")),
    kept: CheckedFlags.indices("kept", { increasing: true }).pipe(Flag.withDescription("Teacher blocks the student keeps, e.g. 1,3,5 (default: --keep of them, evenly)"), Flag.optional),
    keep: CheckedFlags.count("keep").pipe(Flag.withDescription("Blocks kept when --kept is not given (default: half)"), Flag.optional),
    strategy: Flag.Literals("strategy", Recovery.Strategy.literals).pipe(
      Flag.withDescription("finetune, logits-kd, repkd or masked-kd"),
      Flag.withDefault("masked-kd" as const)
    ),
    k: CheckedFlags.positive("k").pipe(Flag.withDescription("Masked KD threshold: ignore |x − μ| ≥ kσ"), Flag.withDefault(2)),
    alignment: Flag.Literals("alignment", ["decision", "fixed"]).pipe(
      Flag.withDescription("RepKD pairs: from the kept blocks (and --group-size), or the reference's fixed mapping"),
      Flag.withDefault("decision" as const)
    ),
    groupSize: CheckedFlags.count("group-size").pipe(
      Flag.withDescription("The decision's N:M groups: M consecutive teacher blocks each (M divides the depth)"),
      Flag.optional
    ),
    alphaKd: optionalWeight("alpha-kd", "Weight of the output KD term (default 0.9)"),
    alphaGt: optionalWeight("alpha-gt", "Weight of the diffusion loss (default 0.1)"),
    beta: optionalWeight("beta", "Rep weight at step 0, decayed linearly to 0 (default 1e-2; SiT 2e-4)"),
    steps: CheckedFlags.count("steps").pipe(Flag.withDescription("Recovery steps"), Flag.withDefault(2000)),
    batchSize: CheckedFlags.count("batch-size").pipe(Flag.withDescription("Latents per batch"), Flag.withDefault(256)),
    seed: CheckedFlags.natural("seed").pipe(Flag.withDescription("Seed of batches and draws"), Flag.withDefault(0)),
    lr: CheckedFlags.positive("lr").pipe(Flag.withDescription("AdamW learning rate (cosine down to --lr-floor)"), Flag.withDefault(2e-4)),
    lrFloor: CheckedFlags.nonNegative("lr-floor").pipe(Flag.withDescription("Learning rate at the last step"), Flag.withDefault(1e-4)),
    emaDecay: CheckedFlags.fraction("ema-decay").pipe(Flag.withDescription("EMA decay (the paper: 0.9999, for 100K steps)"), Flag.withDefault(0.999)),
    clip: CheckedFlags.positive("clip").pipe(Flag.withDescription("Global gradient-norm clip"), Flag.withDefault(1)),
    checkpointEvery: CheckedFlags.natural("checkpoint-every").pipe(Flag.withDescription("Steps between checkpoints (0: none)"), Flag.withDefault(500)),
    curveEvery: CheckedFlags.count("curve-every").pipe(Flag.withDescription("Steps between loss-curve points"), Flag.withDefault(25)),
    nonFinite: Flag.Literals("non-finite", ["skip", "rollback", "fail"]).pipe(
      Flag.withDescription("A non-finite loss: skip the step, roll back, or end the run as diverged"),
      Flag.withDefault("fail" as const)
    )
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const model = yield* teacherModel(o.teacher)
      const { kept, groups } = yield* studentOf(model.config.depth, o)
      const alignment: Recovery.AlignmentConfig = o.alignment === "fixed" ? "fixed" : { kept, ...some("groups", groups) }
      const paper = Recovery.paper(model.family, o.strategy, alignment, o.k)
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
      const { latents, teacher } = yield* reopen(o.teacher, yield* dataStages(o.data))
      const student = yield* Stage.run(Select, { kept }, { teacher })
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
