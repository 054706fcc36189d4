/**
 * How a stage stores a model, so that every stage reads every model the same
 * way (pre-training, pruning export, recovery, evaluation): the network
 * family, its config and parameter count in the manifest's output, and the
 * weights as reference-keyed safetensors — `model.safetensors` (raw) and
 * `ema.safetensors` (the EMA, used for sampling) — that the reference code
 * can load (see `tinyfusion checkpoint export`), with the config and the
 * family in their metadata, so that a file taken out of the store says
 * what it holds.
 *
 * `Model` is the port of a stage that reads a DiT or SiT: any artifact whose
 * output has these fields is one, whatever stage made it (a pre-training, a
 * pruning export, a recovery, an imported file). A MAR is stored alike by
 * MarArtifact; `Models.Any` is the port of a stage that takes either.
 */
import { Effect, Schema } from "effect"
import type { Stage } from "@tinyfusion/core"
import type { HostTensor } from "@tinyfusion/tensor"
import * as Config from "./Config.ts"
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
  const metadata = { [StateDict.familyKey]: model.family }
  yield* ctx.writeBytes(files.raw, yield* StateDict.encode(model.config, model.params, { metadata }))
  if (model.ema !== undefined) yield* ctx.writeBytes(files.ema, yield* StateDict.encode(model.config, model.ema, { metadata }))
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
