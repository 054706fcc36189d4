/**
 * How a stage stores a model, so that every stage reads every model the same
 * way (pre-training, pruning export, recovery, evaluation): the network
 * family, its config and parameter count in the manifest's output, and the
 * weights as reference-keyed safetensors — `model.safetensors` (raw) and
 * `ema.safetensors` (the EMA, used for sampling) — that the reference code
 * can load (see `tinyfusion checkpoint export`).
 *
 * `Model` is the port of a stage that reads a model: any artifact whose
 * output has these fields is one, whatever stage made it (a pre-training, a
 * pruning export, a recovery, an imported file). Another family (a MAR) is
 * another member of `Family` with its config.
 */
import { Effect, Schema } from "effect"
import type { Stage } from "@tinyfusion/core"
import type { HostTensor } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
import * as DiT from "./DiT.ts"
import * as StateDict from "./StateDict.ts"

export const Family = Schema.Literals(["dit", "sit"])
export type Family = typeof Family.Type

/** The output fields of any stage that produces a model. */
export const Fields = {
  family: Family,
  config: Config.Config,
  parameters: Schema.Int
}
/** A model artifact's output: the port of stages that read a model. */
export const Model = Schema.Struct(Fields)
export type Model = typeof Model.Type

/** What reading a model needs of a stage's output. */
export const Identity = Schema.Struct({ family: Family, config: Config.Config })
export type Identity = typeof Identity.Type

const Index = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/**
 * The output fields of a model made of some of a teacher's blocks (a pruning
 * export, a selection by hand): which, and the N:M groups of teacher blocks
 * they were chosen in, if any — what recovery aligns student layers with.
 */
export const BlockFields = {
  /** The key of the model artifact whose blocks these are. */
  source: Schema.String,
  teacherDepth: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Teacher block indices kept, ascending; block i is teacher block kept[i]. */
  kept: Schema.Array(Index),
  groups: Schema.optional(Schema.Array(Schema.Array(Index)))
}
/** The port of a stage that reads a model made of a teacher's blocks. */
export const Blocks = Schema.Struct({ ...Fields, ...BlockFields })
export type Blocks = typeof Blocks.Type

export const files = { raw: "model.safetensors", ema: "ema.safetensors" } as const

/** Parameters of a model of this shape: every tensor of the reference state_dict, pos_embed included. */
export const parameterCount = (config: Config.Config): number =>
  StateDict.referenceShapes(config).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)

/** Writes a model's weights through a stage context; returns the output fields to merge into the stage's output. */
export const write = Effect.fn("ModelArtifact.write")(function*(
  ctx: Stage.Context,
  model: {
    readonly family: Family
    readonly config: Config.Config
    readonly params: HostTensor.HostTree
    readonly ema?: HostTensor.HostTree
  }
) {
  yield* ctx.writeBytes(files.raw, yield* StateDict.encode(model.config, model.params))
  if (model.ema !== undefined) yield* ctx.writeBytes(files.ema, yield* StateDict.encode(model.config, model.ema))
  return { family: model.family, config: model.config, parameters: parameterCount(model.config) } satisfies Model
})

/** Reads a model artifact's weights: the EMA when asked and present, otherwise the raw weights. */
export const read = Effect.fn("ModelArtifact.read")(function*(
  artifact: Stage.Artifact<Identity>,
  options: { readonly ema: boolean }
) {
  const hasEma = artifact.manifest.files.some((f) => f.name === files.ema)
  const name = options.ema && hasEma ? files.ema : files.raw
  const loaded = yield* StateDict.decode(artifact.output.config, yield* artifact.bytes(name))
  return { family: artifact.output.family, config: artifact.output.config, params: loaded.params, ema: name === files.ema }
})

/** Kept blocks that are not a subset of the teacher's. */
export class InvalidSelection extends Schema.TaggedError<InvalidSelection>()("InvalidSelection", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid block selection: ${this.reason}`
  }
}

/**
 * Writes the model made of a teacher's blocks `kept` (its original weights,
 * renumbered 0..k−1) through a stage context; returns the output fields.
 */
export const writeBlocks = Effect.fn("ModelArtifact.writeBlocks")(function*(
  ctx: Stage.Context,
  teacher: { readonly key: string; readonly family: Family; readonly config: Config.Config; readonly params: HostTensor.HostTree },
  blocks: { readonly kept: ReadonlyArray<number>; readonly groups?: ReadonlyArray<ReadonlyArray<number>> | undefined }
) {
  const selected = yield* Effect.try({
    try: () => DiT.keepBlocks(teacher.config, teacher.params, blocks.kept),
    catch: (e) => new InvalidSelection({ reason: (e as Error).message })
  })
  const model = yield* write(ctx, { family: teacher.family, config: selected.config, params: selected.params })
  return {
    ...model,
    source: teacher.key,
    teacherDepth: teacher.config.depth,
    kept: [...blocks.kept],
    ...(blocks.groups === undefined ? {} : { groups: blocks.groups })
  } satisfies Blocks
})
