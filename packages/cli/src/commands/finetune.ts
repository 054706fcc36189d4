/**
 * `tinyfusion finetune`: recovery of a student from a teacher of the store
 * (`--teacher <key>`: any model artifact) on latents (`--latents <key>`, or
 * the ones `tinyfusion data latents` makes at its defaults). The student is
 * the teacher's blocks `--kept` (select-blocks, a pruning decision by hand;
 * by default the first and last block and the rest evenly between, BK-SDM's
 * oracle), in N:M groups of `--group-size` when given (the decision
 * alignment of RepKD pairs each group with the teacher's); the recovery
 * stage fine-tunes or distils it with a strategy of the registry, an added
 * one too (experiments/src/strategies), each option a flag. The learnable
 * pruner, the baselines and the tables' grids run in the suite.
 */
import { Console, Effect, Option, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { Graph, Stage } from "@tinyfusion/core"
import { Trainer } from "@tinyfusion/diffusion"
import { Methods } from "@tinyfusion/experiments"
import { Models } from "@tinyfusion/models"
import { Scheme, Selection } from "@tinyfusion/pruning"
import { Recovery, RecoveryStage, Strategies } from "@tinyfusion/recovery"
import * as CheckedFlags from "../CheckedFlags.ts"
import * as GlobalFlags from "../GlobalFlags.ts"
import * as MethodFlags from "../MethodFlags.ts"
import * as Table from "../Table.ts"
import { dataFlag, latentsFlag, latentsInput } from "./data.ts"

export class FinetuneInput extends Schema.TaggedError<FinetuneInput>()("FinetuneInput", {
  input: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.input}: ${this.reason}`
  }
}

/** The student's blocks and the decision's groups, checked against the teacher's depth before anything runs. */
const studentOf = Effect.fn("finetune.studentOf")(function*(depth: number, o: {
  readonly kept: Option.Option<ReadonlyArray<number>>
  readonly keep: Option.Option<number>
  readonly groupSize: Option.Option<number>
  /** The strategy's alignment option as given, if any. */
  readonly alignment: unknown
}) {
  const refuse = (input: string, reason: string) => new FinetuneInput({ input, reason })
  if (Option.isSome(o.kept) && o.kept.value.at(-1)! >= depth) {
    return yield* refuse("--kept", `block ${o.kept.value.at(-1)} is not one of the teacher's ${depth} blocks (0..${depth - 1})`)
  }
  if (Option.isSome(o.keep) && o.keep.value > depth) return yield* refuse("--keep", `${o.keep.value} blocks of a ${depth}-block teacher`)
  const kept = Option.isSome(o.kept)
    ? [...o.kept.value]
    : yield* Effect.try({
      try: () => [...Selection.uniform(depth, Option.getOrElse(o.keep, () => Math.floor(depth / 2)))],
      catch: (e) => refuse("--keep", (e as Error).message)
    })
  if (Option.isNone(o.groupSize)) return { kept, groups: undefined }
  const m = o.groupSize.value
  if (o.alignment === "fixed") return yield* refuse("--group-size", "the decision's groups do not apply to --alignment fixed")
  if (depth % m !== 0) return yield* refuse("--group-size", `${m} does not divide the teacher's ${depth} blocks into groups`)
  return { kept, groups: Scheme.groups({ m }, depth).groups }
})

/** 4 significant digits; small values in exponent form. */
const figure = (x: number | null | undefined) =>
  x === null || x === undefined ? "-" : Math.abs(x) < 1e-3 && x !== 0 ? x.toExponential(3) : x.toPrecision(4)

const fixed = {
  data: dataFlag,
  teacher: Flag.String("teacher").pipe(Flag.withDescription("Key of the teacher: any model artifact (tinyfusion pretrain prints one)")),
  latents: latentsFlag,
  kept: CheckedFlags.indices("kept", { increasing: true }).pipe(Flag.withDescription("Teacher blocks the student keeps, e.g. 1,3,5 (default: --keep of them, evenly)"), Flag.optional),
  keep: CheckedFlags.count("keep").pipe(Flag.withDescription("Blocks kept when --kept is not given (default: half)"), Flag.optional),
  groupSize: CheckedFlags.count("group-size").pipe(
    Flag.withDescription("The decision's N:M groups: M consecutive teacher blocks each (M divides the depth)"),
    Flag.optional
  ),
  strategy: Flag.String("strategy").pipe(
    Flag.withDescription(`Recovery strategy: ${Methods.allStrategies.map((s) => s.name).join(", ")}`),
    Flag.withDefault("masked-kd")
  ),
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
}

const reserved = [
  "data", "teacher", "latents", "kept", "keep", "group-size", "strategy", "steps", "batch-size", "seed", "lr", "lr-floor",
  "ema-decay", "clip", "checkpoint-every", "curve-every", "non-finite"
]

export const finetune = Command.make(
  "finetune",
  { ...fixed, options: MethodFlags.flags(Methods.allStrategies, reserved) },
  (o) =>
    GlobalFlags.withCompute(Effect.gen(function*() {
      const strategy = yield* Strategies.get(o.strategy)
      const options = yield* MethodFlags.given(Recovery.kind, strategy, o.options)
      // Checked against the teacher before anything runs (its manifest is all that is read).
      const runner = yield* Graph.runner
      const teacher = Graph.existing(o.teacher)
      const model = yield* Stage.as(Models.Any, yield* runner.artifact(teacher), { stage: "tinyfusion finetune", input: "--teacher" })
      const { kept, groups } = yield* studentOf(Models.depth(model.output), { ...o, alignment: options["alignment"] })
      const student = Graph.node(RecoveryStage.SelectStage, { kept, ...(groups === undefined ? {} : { groups }) }, { teacher })
      const config = yield* Stage.decodeConfig(RecoveryStage.RecoveryStage, {
        strategy: o.strategy,
        options,
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
      const recovered = yield* runner.run(Graph.node(RecoveryStage.RecoveryStage, config, { teacher, student, latents: yield* latentsInput(o.latents, o.data) }))
      const out = recovered.output
      const identity = "diverged" in out ? out.student : out
      yield* Console.log(Table.render(
        ["stage", "key", "strategy", "student", "kept", "init. distill. loss", "final loss", "outcome", "samples/s", "loss curve"],
        [[
          "recovery",
          recovered.key,
          out.strategy,
          `${identity.family} ${Models.describe(identity)}`,
          kept.join(","),
          figure(out.headline["initDistillLoss"]),
          figure(out.finalLoss),
          "diverged" in out ? `diverged at step ${out.diverged.step} (loss ${out.diverged.loss})` : `${out.steps} steps`,
          Table.metric(recovered.manifest)("samplesPerSecond", 1),
          recovered.path(Trainer.files.plot)
        ]]
      ))
    }))
).pipe(Command.withDescription("Fine-tune or distil a student made of a teacher's blocks (recovery, Table 5's strategies and any added one)"))
