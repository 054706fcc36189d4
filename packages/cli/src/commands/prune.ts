/**
 * `tinyfusion prune`: one pruner on a teacher of the store (`--teacher
 * <key>`: any model artifact) and latents (`--latents <key>`, or the ones
 * `tinyfusion data latents` makes at its defaults): the prune stage's
 * decision (kept blocks, the method's headline figures such as the learnable
 * method's confidence, the pruned model's calibration loss) and, with
 * --export, the pruned model as a prune-export artifact (`tinyfusion
 * checkpoint export` writes it in reference keys). Every pruner the suite
 * knows is here, an added one too (experiments/src/pruners), each option of
 * each pruner a flag. The suite runs every pruner of the tables.
 */
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { Graph, Stage } from "@tinyfusion/core"
import { Methods } from "@tinyfusion/experiments"
import { Config, Models } from "@tinyfusion/models"
import { Pruner, Pruners, PruneStage, Scheme, Selection } from "@tinyfusion/pruning"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as MethodFlags from "../MethodFlags.ts"
import * as Table from "../Table.ts"
import { dataFlag, latentsFlag, latentsInput } from "./data.ts"
import { FinetuneInput } from "./finetune.ts"

const fixed = {
  data: dataFlag,
  teacher: Flag.String("teacher").pipe(Flag.withDescription("Key of the teacher: any model artifact (tinyfusion pretrain prints one)")),
  latents: latentsFlag,
  method: Flag.String("method").pipe(Flag.withDescription(`Pruner: ${Methods.allPruners.map((m) => m.name).join(", ")}`), Flag.withDefault("learnable")),
  keep: CheckedFlags.count("keep").pipe(
    Flag.withDescription("Blocks kept (with --scheme: checked against it, and needed when the scheme's groups leave blocks over)"),
    Flag.optional
  ),
  scheme: CheckedFlags.scheme("scheme").pipe(Flag.withDescription("N:M scheme, e.g. 1:2, 2:4, 7:14"), Flag.optional),
  calibration: CheckedFlags.count("calibration").pipe(Flag.withDescription("Samples in the fixed calibration set"), Flag.withDefault(256)),
  seed: CheckedFlags.natural("seed").pipe(Flag.withDescription("Seed of the calibration set, the batches and the Gumbel noise"), Flag.withDefault(0)),
  exportModel: Flag.Boolean("export").pipe(Flag.withDescription("Also store the pruned model (prune-export)"), Flag.withDefault(false))
}

/**
 * The target against the teacher's depth, as the prune stage will check it,
 * and one rule of the command: a scheme whose groups leave blocks over
 * (28 blocks at 2:3 keep 9·2 + the last one) needs --keep to say so.
 */
const checkTarget = (depth: number, keep: number | undefined, scheme: string | undefined) =>
  Effect.gen(function*() {
    const target = yield* Effect.try({
      try: () => Selection.target(depth, { keep, scheme: scheme === undefined ? undefined : Scheme.parse(scheme) }),
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

/** "14 blocks", a width-pruned model's widths, a MAR's blocks in each half. */
const shapeOf = (model: Models.Identity): string => {
  if (model.family === "mar") return `${model.config.encoderDepth} + ${model.config.decoderDepth} blocks`
  const c = model.config
  return `${c.depth} blocks${c.headDim === undefined ? "" : `, width ${c.hiddenSize}, ${c.numHeads}×${c.headDim} heads, MLP ${Config.mlpHidden(c)}`}`
}

export const prune = Command.make(
  "prune",
  { ...fixed, options: MethodFlags.flags(Methods.allPruners, ["data", "teacher", "latents", "method", "keep", "scheme", "calibration", "seed", "export"]) },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const method = yield* Pruners.get(o.method)
      const options = yield* MethodFlags.given(Pruner.kind, method, o.options)
      // Checked against the teacher before anything runs (its manifest is all that is read).
      const runner = yield* Graph.runner
      const teacher = Graph.existing(o.teacher)
      const model = yield* Stage.as(Models.Any, yield* runner.artifact(teacher), { stage: "tinyfusion prune", input: "--teacher" })
      yield* checkTarget(Models.depth(model.output), Option.getOrUndefined(o.keep), Option.getOrUndefined(o.scheme))
      const config = yield* Stage.decodeConfig(PruneStage.PruneStage, {
        method: o.method,
        ...Option.match(o.keep, { onNone: () => ({}), onSome: (keep) => ({ keep }) }),
        ...Option.match(o.scheme, { onNone: () => ({}), onSome: (scheme) => ({ scheme }) }),
        seed: o.seed,
        calibration: o.calibration,
        options
      })
      const decision = Graph.node(PruneStage.PruneStage, config, { teacher, data: yield* latentsInput(o.latents, o.data) })
      const decided = yield* runner.run(decision)
      const exported = o.exportModel ? yield* runner.run(Graph.node(PruneStage.ExportStage, {}, { decision, teacher })) : undefined
      const out = decided.output
      const headline = Object.entries(out.headline)
        .map(([name, value]) => `${name} ${Number.isInteger(value) ? value.toLocaleString("en-US") : Table.fixed(value, 3)}`)
        .join(", ")
      yield* Console.log(Table.render(
        ["stage", "key", "method", "kept", "evidence", "calibration loss", "seconds"],
        [
          [
            "prune",
            decided.key,
            `${out.method}${out.scheme === undefined ? "" : ` ${Scheme.format(out.scheme)}`}`,
            out.kept.join(","),
            headline === "" ? "-" : headline,
            out.calibrationLoss === undefined ? "-" : Table.fixed(out.calibrationLoss, 4),
            Table.fixed(decided.manifest.timings.seconds, 1)
          ],
          ...(exported === undefined ? [] : [["prune-export", exported.key, "", shapeOf(exported.output), "", "", ""]])
        ]
      ))
    }))
).pipe(Command.withDescription(
  "Prune a teacher of the store with one pruner, its options as flags (decision, evidence, calibration loss; --export the model)"
))
