/**
 * A model of any family, as the stages that take either read and write it:
 * a DiT or SiT (ModelArtifact) or a MAR (MarArtifact). `Any` is the port of
 * a stage that takes any model — pruning, its export, recovery, evaluation —
 * so a pre-training, an import, a depth- or width-pruned export, a recovery
 * or a MAR all flow into it; `withFields` is the output of a stage that
 * writes a model of its input's family with fields of its own.
 *
 * A model made of some of a teacher's blocks (a pruning export, a selection
 * by hand) records which (`BlockFields`): what recovery aligns its layers
 * with.
 */
import { Effect, Schema } from "effect"
import type { Stage } from "@tinyfusion/core"
import type { HostTensor } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
import * as DiT from "./DiT.ts"
import * as Mar from "./Mar.ts"
import * as MarArtifact from "./MarArtifact.ts"
import * as MarConfig from "./MarConfig.ts"
import * as ModelArtifact from "./ModelArtifact.ts"

/** The output of a stage that writes a model of either family, with `fields` besides. */
export const withFields = <F extends Schema.Struct.Fields>(fields: F) =>
  Schema.Union([Schema.Struct({ ...ModelArtifact.Fields, ...fields }), Schema.Struct({ ...MarArtifact.Fields, ...fields })])

/** Any model artifact's output: the port of a stage that takes a model of any family. */
export const Any = Schema.Union([ModelArtifact.Model, MarArtifact.Model])
export type Any = typeof Any.Type

/** What reading a model of any family needs of a stage's output. */
export const Identity = Schema.Union([ModelArtifact.Identity, MarArtifact.Identity])
export type Identity = typeof Identity.Type

/** A model's weights on the host, with its family and config. */
export type Host =
  | { readonly family: ModelArtifact.Family; readonly config: Config.Config; readonly params: HostTensor.HostTree }
  | { readonly family: "mar"; readonly config: MarConfig.MarConfig; readonly params: HostTensor.HostTree }

/** A model read from its artifact, and whether the weights are the EMA. */
export type Loaded = Host & { readonly ema: boolean }

/** Reads a model artifact of any family: the EMA weights when asked and present, otherwise the raw ones. */
export const read = (artifact: Stage.Artifact<Identity>, options: { readonly ema: boolean }) => {
  const output = artifact.output
  return output.family === "mar"
    ? Effect.map(MarArtifact.read({ ...artifact, output }, options), (m): Loaded => m)
    : Effect.map(ModelArtifact.read({ ...artifact, output }, options), (m): Loaded => m)
}

/** Writes a model of any family through a stage context (and its EMA weights, when given); returns its output fields. */
export const write = (ctx: Stage.Context, model: Host, ema?: HostTensor.HostTree) => {
  const weights = { params: model.params, ...(ema === undefined ? {} : { ema }) }
  return model.family === "mar"
    ? Effect.map(MarArtifact.write(ctx, { config: model.config, ...weights }), (m): Any => m)
    : Effect.map(ModelArtifact.write(ctx, { family: model.family, config: model.config, ...weights }), (m): Any => m)
}

/** What identifies a model's network: its family and config. */
export const identity = (model: Host): Identity =>
  model.family === "mar" ? { family: model.family, config: model.config } : { family: model.family, config: model.config }

/** Blocks in forward order (a MAR's encoder blocks, then its decoder blocks). */
export const depth = (model: Identity): number => (model.family === "mar" ? MarConfig.depth(model.config) : model.config.depth)

/** The model's shape, for messages. */
export const describe = (model: Identity): string => (model.family === "mar" ? MarConfig.describe(model.config) : Config.describe(model.config))

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/**
 * The output fields of a model made of some of a teacher's blocks: which,
 * and the N:M groups of teacher blocks they were chosen in, if any — what
 * recovery aligns student layers with.
 */
export const BlockFields = {
  /** The key of the model artifact whose blocks these are. */
  source: Schema.String,
  teacherDepth: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Teacher block indices kept, ascending; block i is teacher block kept[i]. */
  kept: Schema.Array(Index),
  groups: Schema.optional(Schema.Array(Schema.Array(Index)))
}
/** Where a model's blocks came from (a model made of a teacher's blocks records it). */
export const Blocks = Schema.Struct(BlockFields)
export type Blocks = typeof Blocks.Type

/** Kept blocks that are not a subset of the teacher's. */
export class InvalidSelection extends Schema.TaggedError<InvalidSelection>()("InvalidSelection", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid block selection: ${this.reason}`
  }
}

/**
 * The model of a teacher's blocks `kept`, renumbered (a MAR's in their own
 * half each): a restructured tree sharing the teacher's tensors.
 */
export const keepBlocks = (teacher: Host, kept: ReadonlyArray<number>): Effect.Effect<Host, InvalidSelection> =>
  Effect.try({
    try: (): Host =>
      teacher.family === "mar"
        ? { family: "mar", ...Mar.keepBlocks(teacher.config, teacher.params, kept) }
        : { family: teacher.family, ...DiT.keepBlocks(teacher.config, teacher.params, kept) },
    catch: (e) => new InvalidSelection({ reason: (e as Error).message })
  })

/**
 * Writes the model made of a teacher's blocks `kept` (its original weights,
 * renumbered) through a stage context; returns the output fields.
 */
export const writeBlocks = Effect.fn("Models.writeBlocks")(function*(
  ctx: Stage.Context,
  teacher: Host & { readonly key: string },
  blocks: { readonly kept: ReadonlyArray<number>; readonly groups?: ReadonlyArray<ReadonlyArray<number>> | undefined }
) {
  const model = yield* write(ctx, yield* keepBlocks(teacher, blocks.kept))
  return {
    ...model,
    source: teacher.key,
    teacherDepth: depth(teacher),
    kept: [...blocks.kept],
    ...(blocks.groups === undefined ? {} : { groups: blocks.groups })
  }
})
