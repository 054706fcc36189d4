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
import { Pruner, Pruners, PruneStage, Scheme } from "@tinyfusion/pruning"
import * as MethodFlags from "../MethodFlags.ts"
import * as Table from "../Table.ts"
import { dataFlag, latentsFlag, latentsInput, withData } from "./data.ts"

const fixed = {
  data: dataFlag,
  teacher: Flag.String("teacher").pipe(Flag.withDescription("Key of the teacher: any model artifact (tinyfusion pretrain prints one)")),
  latents: latentsFlag,
  method: Flag.String("method").pipe(Flag.withDescription(`Pruner: ${Methods.allPruners.map((m) => m.name).join(", ")}`), Flag.withDefault("learnable")),
  keep: Flag.Int("keep").pipe(Flag.withDescription("Blocks kept (with --scheme: checked against it)"), Flag.optional),
  scheme: Flag.String("scheme").pipe(Flag.withDescription("N:M scheme, e.g. 1:2, 2:4, 7:14"), Flag.optional),
  calibration: Flag.Int("calibration").pipe(Flag.withDescription("Samples in the fixed calibration set"), Flag.withDefault(256)),
  seed: Flag.Int("seed").pipe(Flag.withDescription("Seed of the calibration set, the batches and the Gumbel noise"), Flag.withDefault(0)),
  exportModel: Flag.Boolean("export").pipe(Flag.withDescription("Also store the pruned model (prune-export)"), Flag.withDefault(false))
}

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
    withData(o.data, Effect.gen(function*() {
      const method = yield* Pruners.get(o.method)
      const config = yield* Stage.decodeConfig(PruneStage.PruneStage, {
        method: o.method,
        ...Option.match(o.keep, { onNone: () => ({}), onSome: (keep) => ({ keep }) }),
        ...Option.match(o.scheme, { onNone: () => ({}), onSome: (scheme) => ({ scheme }) }),
        seed: o.seed,
        calibration: o.calibration,
        options: yield* MethodFlags.given(Pruner.kind, method, o.options)
      })
      const teacher = Graph.existing(o.teacher)
      const decision = Graph.node(PruneStage.PruneStage, config, { teacher, data: yield* latentsInput(o.latents) })
      const runner = yield* Graph.runner
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
