/**
 * The pruning stages of the pipeline (packages/core Stage):
 *
 *   prune          runs a Pruner method, chosen by name, on a teacher and
 *                  latent data and writes decision.json (a PruneDecision with
 *                  the method's evidence, Schema-validated on read); its
 *                  output is a summary of the decision with the evidence's
 *                  headline figures
 *   prune-export   the pruned model: the teacher's ORIGINAL weights of the
 *                  kept blocks, renumbered 0..k−1 (a learned ΔW is not
 *                  carried over), or the model of a method that makes its
 *                  own (Diff-Pruning: the teacher cut to the kept channels),
 *                  as a model artifact: model.safetensors in the reference
 *                  state_dict keys with the config (widths included) in its
 *                  metadata — what `tinyfusion checkpoint export` reads
 *
 * Inputs are ports: the teacher is any model artifact of any family
 * (models Models.Any: a DiT, SiT or MAR pre-training, an import, a pruning
 * export — so a pruned model can be pruned again, D14 → D7 — or a
 * recovery), read as its EMA weights where it has them and seen by the
 * pruners as a block stack (BlockStack.dit, MarStack); the data
 * any latents artifact. The method's options are decoded by its own Schema
 * (defaults filled in before the key is taken), and its module joins the
 * key: changing a pruner invalidates its decisions, not the others'.
 */
import { Effect, Schema } from "effect"
import { type CorruptArtifact, Method, Stage, type StoreError } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Models } from "@tinyfusion/models"
import { HostTensor, ParamTree } from "@tinyfusion/tensor"
import * as BlockStack from "./BlockStack.ts"
import { PruneDecision } from "./Decision.ts"
import * as MarStack from "./MarStack.ts"
import * as Pruner from "./Pruner.ts"
import * as Pruners from "./Pruners.ts"
import * as Scheme from "./Scheme.ts"
import * as Selection from "./Selection.ts"

export const decisionFile = "decision.json"

/**
 * The teacher of a model artifact: its EMA weights when it has them (the
 * reference prunes the checkpoint's EMA), every key and shape checked.
 */
export const readModel = (artifact: Stage.Artifact<Models.Identity>) => Models.read(artifact, { ema: true })

/** A model's blocks as the pruners see them: a DiT or SiT under its objective, or a MAR with its DiffLoss. */
export const stackOf = (model: Models.Host) =>
  model.family === "mar"
    ? MarStack.of(model.config)
    : Effect.map(BlockStack.objective(model.family, model.config), (objective) => BlockStack.dit(objective, model.config))

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const PruneConfig = Schema.Struct({
  /** A name in the Pruners registry. */
  method: Schema.String,
  /** Blocks kept (with a scheme, optional and checked against it). */
  keep: Schema.optional(PositiveInt),
  /** N:M local scheme, e.g. "1:2". */
  scheme: Schema.optional(Scheme.Scheme),
  seed: Count,
  /** Samples in the fixed calibration set. */
  calibration: PositiveInt,
  /** The method's options (its `options` Schema; missing ones take their defaults). */
  options: Schema.Record(Schema.String, Schema.Json).pipe(Schema.withDecodingDefaultKey(Effect.succeed({})))
})
export type PruneConfig = typeof PruneConfig.Type

/** The stage output: the decision's headline; decision.json holds all of it. */
export const PruneSummary = Schema.Struct({
  method: Schema.String,
  teacherDepth: Models.BlockFields.teacherDepth,
  kept: Models.BlockFields.kept,
  groups: Models.BlockFields.groups,
  scheme: Schema.optional(Scheme.Scheme),
  calibrationLoss: Schema.optional(Schema.Finite),
  /** The evidence's headline figures (core Method.headline), e.g. the learnable method's confidence. */
  headline: Schema.Record(Schema.String, Schema.Finite)
})
export type PruneSummary = typeof PruneSummary.Type

export const ExportConfig = Schema.Struct({})

/** The pruned model, of the teacher's family, with the blocks it keeps and the method that chose them. */
export const ExportOutput = Models.withFields({ ...Models.BlockFields, method: Schema.String })

export class DecisionMismatch extends Schema.TaggedError<DecisionMismatch>()("DecisionMismatch", {
  method: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `pruner ${this.method} returned a decision that does not fit: ${this.reason}`
  }
}

/** The target of a config on a depth, as an effect. */
const targetOf = (depth: number, config: PruneConfig) =>
  Effect.try({
    try: () => Selection.target(depth, { keep: config.keep, scheme: config.scheme }),
    catch: (e) => e as Selection.InvalidTarget
  })

/** Why a method's kept blocks miss the target, if they do. */
const misses = (kept: ReadonlyArray<number>, depth: number, target: Selection.Target): string | undefined => {
  if (kept.length !== target.keep) return `keeps ${kept.length} of ${depth} blocks; the target is ${Selection.describe(target)} of ${depth}`
  if (kept.some((k, i) => !Number.isInteger(k) || k < 0 || k >= depth || (i > 0 && k <= kept[i - 1]!))) {
    return `kept blocks [${kept}] are not ascending within 0..${depth - 1}`
  }
  if (target.scheme === undefined) return undefined
  const { groups } = Scheme.groups(target.scheme, depth)
  const short = groups.findIndex((g) => g.filter((layer) => kept.includes(layer)).length !== target.scheme!.n)
  return short < 0 ? undefined : `group ${short} (blocks ${groups[short]!.join(", ")}) does not keep ${target.scheme.n}`
}

/**
 * The model a decision keeps, on the host: the method's own (width pruning
 * narrows every block of a DiT or SiT to the kept channels), or the kept
 * blocks renumbered (a restructured tree sharing the teacher's tensors).
 */
const prunedModel = (method: Pruner.Method, teacher: Models.Host, kept: ReadonlyArray<number>, evidence: unknown): Effect.Effect<Models.Host, DecisionMismatch> => {
  const mismatch = (reason: string) => new DecisionMismatch({ method: method.name, reason })
  const own = method.model
  if (own === undefined) return Effect.mapError(Models.keepBlocks(teacher, kept), (e) => mismatch(e.reason))
  if (teacher.family === "mar") return Effect.fail(mismatch("it makes its own model of a DiT or SiT, and the teacher is a MAR"))
  return Effect.try({
    try: (): Models.Host => ({ family: teacher.family, ...own(teacher, evidence) }),
    catch: (e) => mismatch(e instanceof Error ? e.message : String(e))
  })
}

/** The built-in methods count in a key only when a config chooses one (Stage.select); a decision's key covers its method. */
const methods = Pruners.registry.modules

/** The prune stage: a method of the Pruners registry on a teacher (any model) and latents. */
export const PruneStage = Stage.make({
  name: "prune",
  module: import.meta.url,
  exclude: methods,
  config: PruneConfig,
  output: PruneSummary,
  inputs: { teacher: Models.Any, data: Stages.LatentsOutput },
  select: Method.select(Pruners.registry, (config: PruneConfig) => config.method),
  run: (config, inputs, ctx) =>
    Effect.gen(function*() {
      const teacher = yield* readModel(inputs.teacher)
      const source = yield* Stages.readLatents(inputs.data)
      const method = yield* Pruners.get(config.method)
      const options = yield* Pruner.options(method, config.options)
      const target = yield* targetOf(Models.depth(teacher), config)
      const stack = yield* stackOf(teacher)
      const calibration = stack.calibrationSet(source.batch({ seed: config.seed, batchSize: config.calibration }, 0), config.seed)
      yield* Effect.logInfo(`${method.name} on ${stack.description}: ${Selection.describe(target)}`)
      const decision = yield* Effect.acquireUseRelease(
        Effect.sync(() => HostTensor.treeToTensors(teacher.params)),
        (params) =>
          Effect.gen(function*() {
            const decided = yield* method.prune({ stack, params, target, calibration, source, options, seed: config.seed, ctx })
            const kept = [...decided.kept]
            const missed = misses(kept, stack.depth, target)
            if (missed !== undefined) return yield* new DecisionMismatch({ method: method.name, reason: missed })
            const evidence = yield* Schema.encodeUnknownEffect(method.evidence)(decided.evidence).pipe(
              Effect.mapError((e) => new DecisionMismatch({ method: method.name, reason: `its evidence does not fit its Schema: ${e.message}` }))
            )
            const loss = method.model === undefined
              ? yield* stack.calibrationLoss(params, calibration, { kept })
              : yield* Effect.flatMap(prunedModel(method, teacher, kept, decided.evidence), (pruned) =>
                Effect.flatMap(stackOf(pruned), (own) =>
                  Effect.acquireUseRelease(
                    Effect.sync(() => HostTensor.treeToTensors(pruned.params)),
                    (p) => own.calibrationLoss(p, calibration),
                    (p) => Effect.sync(() => ParamTree.dispose(p))
                  )))
            return {
              method: method.name,
              teacherDepth: stack.depth,
              kept,
              ...Selection.groupsOf(target, stack.depth),
              ...(Number.isFinite(loss) ? { calibrationLoss: loss } : {}),
              evidence: evidence as Schema.Json
            } satisfies PruneDecision
          }),
        (params) => Effect.sync(() => ParamTree.dispose(params))
      )
      yield* ctx.writeJson(decisionFile, yield* Schema.encodeUnknownEffect(PruneDecision)(decision).pipe(Effect.orDie))
      yield* ctx.metric("calibrationLoss", decision.calibrationLoss ?? Number.NaN)
      const headline = Method.headline(decision.evidence)
      for (const [name, value] of Object.entries(headline)) yield* ctx.metric(name, value)
      const { evidence: _, ...summary } = decision
      return { ...summary, headline }
    })
})

/** The prune-export stage: the model a decision keeps (its method's, or the teacher's kept blocks renumbered). */
export const ExportStage = Stage.make({
  name: "prune-export",
  module: import.meta.url,
  exclude: methods,
  config: ExportConfig,
  output: ExportOutput,
  inputs: { decision: PruneSummary, teacher: Models.Any },
  run: (_config, inputs, ctx) =>
    Effect.gen(function*() {
      const decision = yield* readDecision(inputs.decision)
      const teacher = yield* readModel(inputs.teacher)
      if (decision.teacherDepth !== Models.depth(teacher)) {
        return yield* new DecisionMismatch({
          method: decision.method,
          reason: `decided on ${decision.teacherDepth} blocks, the teacher has ${Models.depth(teacher)}`
        })
      }
      const method = yield* Pruners.get(decision.method)
      const evidence = yield* Schema.decodeUnknownEffect(method.evidence)(decision.evidence).pipe(
        Effect.mapError((e) => new DecisionMismatch({ method: method.name, reason: `its stored evidence does not decode: ${e.message}` }))
      )
      const pruned = yield* prunedModel(method, teacher, decision.kept, evidence)
      const model = yield* Models.write(ctx, pruned)
      return {
        ...model,
        source: inputs.teacher.key,
        teacherDepth: decision.teacherDepth,
        kept: decision.kept,
        ...(decision.groups === undefined ? {} : { groups: decision.groups }),
        method: decision.method
      }
    })
})

/** The full decision of a prune artifact, validated. */
export const readDecision = (artifact: Stage.Artifact<unknown>): Effect.Effect<PruneDecision, StoreError | CorruptArtifact> =>
  artifact.json(decisionFile, PruneDecision)
