/**
 * The pruning stages of the pipeline (packages/core Stage):
 *
 *   prune          runs a Pruner method on a teacher and latent data and
 *                  writes decision.json (a PruneDecision, Schema-validated
 *                  on read); its output is a summary of the decision
 *   prune-export   the pruned model: the teacher's ORIGINAL weights of the
 *                  kept blocks, renumbered 0..k−1 (a learned ΔW is not
 *                  carried over), or for a width decision the teacher cut
 *                  to the kept channels (Width.narrow), as a ModelArtifact:
 *                  model.safetensors in the reference state_dict keys with
 *                  the config (widths included) in its metadata — what
 *                  `tinyfusion checkpoint export` reads
 *
 * The upstream stages are parameters: `make` takes the stage that holds the
 * teacher and the one that holds the latents, with a reader for each (the
 * teacher as family + config + host weights, the data as a LatentSource),
 * so any training or import stage can feed pruning. A stage that stores its
 * model as a ModelArtifact (packages/models) — as prune-export itself does —
 * is read by `readModel`, so a pruned model can be pruned again (D14 → D7).
 */
import { Effect, Schema } from "effect"
import { type CorruptArtifact, Stage, type StoreError } from "@tinyfusion/core"
import { type Checkpoint, type Config, DiT, Mar, MarArtifact, type MarConfig, ModelArtifact } from "@tinyfusion/models"
import { HostTensor, ParamTree, type Safetensors } from "@tinyfusion/tensor"
import * as BlockStack from "./BlockStack.ts"
import { PruneDecision } from "./Decision.ts"
import type { LatentSource } from "./LatentSource.ts"
import * as MarStack from "./MarStack.ts"
import * as Pruners from "./Pruners.ts"
import * as Selection from "./Selection.ts"
import * as Width from "./Width.ts"

export const decisionFile = "decision.json"

export interface DitTeacher {
  readonly family: ModelArtifact.Family
  readonly config: Config.Config
  readonly params: HostTensor.HostTree
}

export interface MarTeacher {
  readonly family: "mar"
  readonly config: MarConfig.MarConfig
  readonly params: HostTensor.HostTree
}

export type Teacher = DitTeacher | MarTeacher

/** A teacher's blocks as the pruners see them: DiT/SiT under their objective, or a MAR with its DiffLoss. */
export const stackOf = (teacher: Teacher) =>
  teacher.family === "mar"
    ? MarStack.of(teacher.config)
    : Effect.map(BlockStack.objective(teacher.family, teacher.config), (objective) => BlockStack.dit(objective, teacher.config))

/** The depth of a teacher's block stack. */
const depthOf = (teacher: Teacher): number =>
  teacher.family === "mar" ? teacher.config.encoderDepth + teacher.config.decoderDepth : teacher.config.depth

/**
 * The teacher of a ModelArtifact: its EMA weights when it has them (the
 * reference prunes the checkpoint's EMA), every key and shape checked.
 */
export const readModel = (artifact: Stage.Artifact<ModelArtifact.Output>): Effect.Effect<DitTeacher, StoreError | CorruptArtifact | Checkpoint.CheckpointMismatch | Safetensors.SafetensorsError> =>
  ModelArtifact.read(artifact, { ema: true })

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
const Count = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

export const PruneConfig = Schema.Struct({
  /** A name in the Pruners registry. */
  method: Schema.String,
  /** Blocks kept (with a scheme, optional and checked against it). */
  keep: Schema.optional(PositiveInt),
  /** N:M local scheme, e.g. "1:2". */
  scheme: Schema.optional(Schema.String),
  seed: Count,
  /** Samples in the fixed calibration set. */
  calibration: PositiveInt,
  /** Iterations of an iterative method (mask learning). */
  iterations: Count.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** The method's own options (see each method's Options). */
  options: Schema.Record(Schema.String, Schema.Json).pipe(Schema.withDecodingDefaultKey(Effect.succeed({})))
})
export type PruneConfig = typeof PruneConfig.Type

/**
 * The config that runs `method` with the knobs that apply to it: the
 * iterations and Learnable options for the learnable method, the sample
 * count for random search, Diff-Pruning's options for it, none for the
 * others (an added method runs on its option defaults).
 */
export const configFor = (method: string, knobs: {
  readonly keep?: number | undefined
  readonly scheme?: string | undefined
  readonly seed: number
  readonly calibration: number
  readonly iterations: number
  readonly learnable: { readonly [name: string]: Schema.Json }
  readonly samples: number
  /** Diff-Pruning's options (its ratio at least). */
  readonly diffPruning?: { readonly [name: string]: Schema.Json }
}): typeof PruneConfig.Encoded => ({
  method,
  ...(knobs.keep === undefined ? {} : { keep: knobs.keep }),
  ...(knobs.scheme === undefined ? {} : { scheme: knobs.scheme }),
  seed: knobs.seed,
  calibration: knobs.calibration,
  iterations: method === "learnable" ? knobs.iterations : 0,
  options: method === "learnable"
    ? knobs.learnable
    : method.startsWith("random-")
    ? { samples: knobs.samples }
    : method === "diff-pruning"
    ? knobs.diffPruning ?? {}
    : {}
})

/** The stage output: the decision's headline; decision.json holds all of it. */
export const PruneSummary = Schema.Struct({
  method: Schema.String,
  teacherDepth: PositiveInt,
  kept: Schema.Array(Count),
  scheme: Schema.optional(Schema.String),
  confidence: Schema.optional(Schema.Finite),
  calibrationLoss: Schema.optional(Schema.Finite)
})

export const ExportConfig = Schema.Struct({})

export const ExportOutput = Schema.Struct({
  ...ModelArtifact.Fields,
  method: Schema.String,
  teacherDepth: PositiveInt,
  kept: Schema.Array(Count)
})

export class DecisionMismatch extends Schema.TaggedError<DecisionMismatch>()("DecisionMismatch", {
  method: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `pruner ${this.method} returned a decision that does not fit: ${this.reason}`
  }
}

export interface Wiring<T extends Stage.Any, D extends Stage.Any, E, R> {
  /** The stage holding the teacher. */
  readonly teacher: T
  /** The stage holding the latents. */
  readonly data: D
  readonly readTeacher: (artifact: Stage.Artifact<Stage.OutputOf<T>>) => Effect.Effect<Teacher, E, R>
  readonly readData: (artifact: Stage.Artifact<Stage.OutputOf<D>>) => Effect.Effect<LatentSource, E, R>
}

/** The target of a config on a depth, as an effect. */
const targetOf = (depth: number, config: PruneConfig) =>
  Effect.try({
    try: () => Selection.target(depth, { keep: config.keep, scheme: config.scheme }),
    catch: (e) => e as Selection.InvalidTarget
  })

/**
 * The model a decision keeps, on the host: the kept blocks renumbered (a
 * restructured tree sharing the teacher's tensors), or for a width decision
 * the teacher cut to the kept channels.
 */
export const prunedModel = (teacher: DitTeacher, decision: PruneDecision) =>
  Effect.try({
    try: (): { readonly config: Config.Config; readonly params: HostTensor.HostTree } => {
      if (decision.width !== undefined) return Width.narrow(teacher.config, teacher.params, decision.width.kept)
      // keepBlocks only restructures the tree (it reads no tensor), so it serves host trees too.
      const kept = DiT.keepBlocks(teacher.config, teacher.params as unknown as ParamTree.ParamTree, decision.kept)
      return { config: kept.config, params: kept.params as unknown as HostTensor.HostTree }
    },
    catch: (e) => new DecisionMismatch({ method: decision.method, reason: e instanceof Error ? e.message : String(e) })
  })

/** The prune and prune-export stages over these upstream stages. */
export function make<T extends Stage.Any, D extends Stage.Any, E, R>(wiring: Wiring<T, D, E, R>) {
  const prune = Stage.make({
    name: "prune",
    version: 1,
    config: PruneConfig,
    output: PruneSummary,
    inputs: { teacher: wiring.teacher, data: wiring.data } as { readonly teacher: T; readonly data: D },
    run: (config, inputs, ctx) =>
      Effect.gen(function*() {
        const teacher = yield* wiring.readTeacher(inputs.teacher)
        const source = yield* wiring.readData(inputs.data)
        const method = yield* Pruners.get(config.method)
        const target = yield* targetOf(depthOf(teacher), config)
        const stack = yield* stackOf(teacher)
        const calibration = stack.calibrationSet(source.batch({ seed: config.seed, batchSize: config.calibration }, 0), config.seed)
        yield* Effect.logInfo(`${method.name} on ${stack.description}: ${Selection.describe(target)}`)
        const decision = yield* Effect.acquireUseRelease(
          Effect.sync(() => HostTensor.treeToTensors(teacher.params)),
          (params) =>
            Effect.gen(function*() {
              const decided = yield* method.prune({
                stack,
                params,
                target,
                calibration,
                source,
                options: config.options,
                seed: config.seed,
                iterations: config.iterations,
                ctx
              })
              const checked = yield* Schema.decodeUnknownEffect(PruneDecision)(decided).pipe(
                Effect.mapError((e) => new DecisionMismatch({ method: method.name, reason: e.message }))
              )
              if (checked.teacherDepth !== stack.depth || checked.kept.length !== target.keep) {
                return yield* new DecisionMismatch({
                  method: method.name,
                  reason: `keeps ${checked.kept.length} of ${checked.teacherDepth} blocks; the target is ${Selection.describe(target)} of ${stack.depth}`
                })
              }
              const loss = checked.width === undefined
                ? yield* stack.calibrationLoss(params, calibration, { kept: checked.kept })
                : teacher.family === "mar"
                ? yield* new DecisionMismatch({ method: method.name, reason: "width decisions are for DiT and SiT, not MAR" })
                : yield* Effect.flatMap(Effect.all([prunedModel(teacher, checked), BlockStack.objective(teacher.family, teacher.config)]), ([narrow, objective]) =>
                  Effect.acquireUseRelease(
                    Effect.sync(() => HostTensor.treeToTensors(narrow.params)),
                    (p) => BlockStack.dit(objective, narrow.config).calibrationLoss(p, calibration),
                    (p) => Effect.sync(() => ParamTree.dispose(p))
                  ))
              return { ...checked, ...(Number.isFinite(loss) ? { calibrationLoss: loss } : {}) }
            }),
          (params) => Effect.sync(() => ParamTree.dispose(params))
        )
        yield* ctx.writeJson(decisionFile, yield* Schema.encodeUnknownEffect(PruneDecision)(decision).pipe(Effect.orDie))
        yield* ctx.metric("calibration_loss", decision.calibrationLoss ?? Number.NaN)
        return {
          method: decision.method,
          teacherDepth: decision.teacherDepth,
          kept: decision.kept,
          ...(decision.scheme === undefined ? {} : { scheme: decision.scheme }),
          ...(decision.confidence === undefined ? {} : { confidence: decision.confidence }),
          ...(decision.calibrationLoss === undefined ? {} : { calibrationLoss: decision.calibrationLoss })
        }
      })
  })

  const exported = Stage.make({
    name: "prune-export",
    version: 1,
    config: ExportConfig,
    output: ExportOutput,
    inputs: { decision: prune, teacher: wiring.teacher } as { readonly decision: typeof prune; readonly teacher: T },
    run: (_config, inputs, ctx) =>
      Effect.gen(function*() {
        const decision = yield* readDecision(inputs.decision)
        const teacher = yield* wiring.readTeacher(inputs.teacher)
        if (teacher.family === "mar") {
          return yield* new DecisionMismatch({ method: decision.method, reason: "a MAR's pruned model is exported by the mar-prune-export stage (PruneStage.marExport)" })
        }
        if (decision.teacherDepth !== teacher.config.depth) {
          return yield* new DecisionMismatch({
            method: decision.method,
            reason: `decided on ${decision.teacherDepth} blocks, the teacher has ${teacher.config.depth}`
          })
        }
        const pruned = yield* prunedModel(teacher, decision)
        const model = yield* ModelArtifact.write(ctx, { family: teacher.family, config: pruned.config, params: pruned.params })
        return { ...model, method: decision.method, teacherDepth: decision.teacherDepth, kept: decision.kept }
      })
  })

  return { prune, export: exported }
}

/** The full decision of a prune artifact, validated. */
export const readDecision = (artifact: Stage.Artifact<unknown>): Effect.Effect<PruneDecision, StoreError | CorruptArtifact> =>
  artifact.json(decisionFile, PruneDecision)

export const MarExportOutput = Schema.Struct({
  ...MarArtifact.Fields,
  method: Schema.String,
  teacherDepth: PositiveInt,
  kept: Schema.Array(Count)
})

/**
 * The pruned MAR (`mar-prune-export`): the teacher's original weights of the
 * kept blocks, each kept in its half (encoder or decoder) and renumbered there,
 * as a MarArtifact in the reference keys.
 */
export function marExport<P extends Stage.Any, T extends Stage.Any, E, R>(
  prune: P,
  wiring: Pick<Wiring<T, Stage.Any, E, R>, "teacher" | "readTeacher">
) {
  return Stage.make({
    name: "mar-prune-export",
    version: 1,
    config: ExportConfig,
    output: MarExportOutput,
    inputs: { decision: prune, teacher: wiring.teacher } as { readonly decision: P; readonly teacher: T },
    run: (_config, inputs, ctx) =>
      Effect.gen(function*() {
        const decision = yield* readDecision(inputs.decision as Stage.Artifact<unknown>)
        const teacher = yield* wiring.readTeacher(inputs.teacher as Stage.Artifact<Stage.OutputOf<T>>)
        if (teacher.family !== "mar") {
          return yield* new DecisionMismatch({ method: decision.method, reason: `the teacher is a ${teacher.family}, not a MAR` })
        }
        if (decision.teacherDepth !== depthOf(teacher)) {
          return yield* new DecisionMismatch({ method: decision.method, reason: `decided on ${decision.teacherDepth} blocks, the teacher has ${depthOf(teacher)}` })
        }
        // keepBlocks only restructures the tree, so it serves host trees too.
        const pruned = Mar.keepBlocks(teacher.config, teacher.params as unknown as ParamTree.ParamTree, decision.kept)
        const model = yield* MarArtifact.write(ctx, { config: pruned.config, params: pruned.params as unknown as HostTensor.HostTree })
        const out: typeof MarExportOutput.Type = { ...model, method: decision.method, teacherDepth: decision.teacherDepth, kept: decision.kept }
        return out
      })
  })
}

/** The teacher of a MarArtifact: its EMA weights when it has them. */
export const readMar = (artifact: Stage.Artifact<MarArtifact.Output>): Effect.Effect<MarTeacher, StoreError | CorruptArtifact | Checkpoint.CheckpointMismatch | Safetensors.SafetensorsError> =>
  MarArtifact.read(artifact, { ema: true })
