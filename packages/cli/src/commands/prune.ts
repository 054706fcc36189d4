/**
 * `tinyfusion prune`: one pruner on a pretrained teacher of the store
 * (`--teacher <key>`, its latents found from its manifest as `finetune`
 * does): the prune stage's decision (kept blocks, the learnable method's
 * confidence, the pruned model's calibration loss) and, with --export, the
 * pruned model as a prune-export artifact (`tinyfusion checkpoint export`
 * writes it in reference keys). The suite runs every pruner of the tables.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Pretrain } from "@tinyfusion/diffusion"
import { Config } from "@tinyfusion/models"
import { Pruners, PruneStage, Selection } from "@tinyfusion/pruning"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as Table from "../Table.ts"
import { dataFlag, dataStages } from "./data.ts"
import { FinetuneInput, reopen, teacherModel } from "./finetune.ts"

const Pruning = PruneStage.make({
  teacher: Pretrain.PretrainStage,
  data: Stages.LatentsStage,
  readTeacher: PruneStage.readModel,
  readData: Stages.readLatents
})

/**
 * The target against the teacher's depth, as the prune stage will check it,
 * and one rule of the command: a scheme whose groups leave blocks over
 * (28 blocks at 2:3 keep 9·2 + the last one) needs --keep to say so.
 */
const checkTarget = (depth: number, keep: number | undefined, scheme: string | undefined) =>
  Effect.gen(function*() {
    const target = yield* Effect.try({
      try: () => Selection.target(depth, { keep, scheme }),
      catch: (e) => new FinetuneInput({ input: scheme === undefined ? "--keep" : "--scheme", reason: (e as Selection.InvalidTarget).message })
    })
    if (target.scheme === undefined || keep !== undefined) return
    const left = depth % target.scheme.m
    if (left > 0) {
      return yield* new FinetuneInput({
        input: "--scheme",
        reason: `${scheme} on ${depth} blocks leaves the last ${left} in no group (always kept: ${target.keep} blocks in all); give --keep ${target.keep} to prune so`
      })
    }
  })

/** "14 blocks", and a width-pruned model's widths. */
const shapeOf = (c: Config.Config): string =>
  `${c.depth} blocks${c.headDim === undefined ? "" : `, width ${c.hiddenSize}, ${c.numHeads}×${c.headDim} heads, MLP ${Config.mlpHidden(c)}`}`

export const prune = Command.make(
  "prune",
  {
    data: dataFlag,
    teacher: Flag.String("teacher").pipe(Flag.withDescription("Key of the teacher's pretrain artifact (tinyfusion pretrain prints it)")),
    method: Flag.String("method").pipe(Flag.withDescription(`Pruner: ${[...Pruners.builtin.keys()].join(", ")}`), Flag.withDefault("learnable")),
    keep: CheckedFlags.count("keep").pipe(
      Flag.withDescription("Blocks kept (with --scheme: checked against it, and needed when the scheme's groups leave blocks over)"),
      Flag.optional
    ),
    scheme: CheckedFlags.scheme("scheme").pipe(Flag.withDescription("N:M scheme, e.g. 1:2, 2:4, 7:14"), Flag.optional),
    update: Flag.Literals("update", ["lora", "full", "frozen"]).pipe(Flag.withDescription("learnable: the co-optimised ΔW"), Flag.withDefault("lora" as const)),
    iterations: CheckedFlags.count("iterations").pipe(Flag.withDescription("learnable: mask-learning iterations"), Flag.withDefault(500)),
    batchSize: CheckedFlags.count("batch-size").pipe(Flag.withDescription("learnable: latents per iteration"), Flag.withDefault(64)),
    samples: CheckedFlags.count("samples").pipe(Flag.withDescription("random-*: masks sampled"), Flag.withDefault(1000)),
    ratio: CheckedFlags.share("ratio").pipe(Flag.withDescription("diff-pruning: share of parameters removed (with --keep the teacher's depth)"), Flag.optional),
    stride: CheckedFlags.count("stride").pipe(Flag.withDescription("diff-pruning: accumulate the gradient at every stride-th timestep"), Flag.withDefault(1)),
    calibration: CheckedFlags.count("calibration").pipe(Flag.withDescription("Samples in the fixed calibration set"), Flag.withDefault(256)),
    seed: CheckedFlags.natural("seed").pipe(Flag.withDescription("Seed of the calibration set, the batches and the Gumbel noise"), Flag.withDefault(0)),
    exportModel: Flag.Boolean("export").pipe(Flag.withDescription("Also store the pruned model (prune-export)"), Flag.withDefault(false))
  },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      yield* Pruners.get(o.method)
      yield* checkTarget((yield* teacherModel(o.teacher)).config.depth, Option.getOrUndefined(o.keep), Option.getOrUndefined(o.scheme))
      const config = yield* Stage.decodeConfig(Pruning.prune, PruneStage.configFor(o.method, {
        keep: Option.getOrUndefined(o.keep),
        scheme: Option.getOrUndefined(o.scheme),
        seed: o.seed,
        calibration: o.calibration,
        iterations: o.iterations,
        learnable: { update: o.update, batchSize: o.batchSize },
        samples: o.samples,
        diffPruning: { ...Option.match(o.ratio, { onNone: () => ({}), onSome: (ratio) => ({ ratio }) }), stride: o.stride }
      }))
      const { latents, teacher } = yield* reopen(o.teacher, yield* dataStages(o.data))
      const decided = yield* Stage.run(Pruning.prune, config, { teacher, data: latents })
      const out = decided.output
      const exported = o.exportModel ? yield* Stage.run(Pruning.export, {}, { decision: decided, teacher }) : undefined
      const msPerIteration = config.iterations > 0 ? Table.fixed((1000 * decided.manifest.timings.seconds) / config.iterations, 1) : "-"
      yield* Console.log(Table.render(
        ["stage", "key", "method", "kept", "confidence", "calibration loss", "ms/iteration (whole stage)"],
        [
          [
            "prune",
            decided.key,
            `${out.method}${out.scheme === undefined ? "" : ` ${out.scheme}`}`,
            out.kept.join(","),
            out.confidence === undefined ? "-" : Table.fixed(out.confidence, 3),
            out.calibrationLoss === undefined ? "-" : Table.fixed(out.calibrationLoss, 4),
            msPerIteration
          ],
          ...(exported === undefined ? [] : [["prune-export", exported.key, "", shapeOf(exported.output.config), "", "", ""]])
        ]
      ))
    }))
).pipe(Command.withDescription("Prune a pretrained teacher of the store with one pruner (decision, confidence, calibration loss; --export the model)"))
