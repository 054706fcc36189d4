/**
 * How a stage stores a MAR, as ModelArtifact does a DiT: the family ("mar"),
 * the config and parameter count in the manifest's output, and the weights
 * as reference-keyed safetensors under the same file names — model.safetensors
 * (raw) and ema.safetensors (the EMA, used for sampling) — that the
 * reference code loads as a checkpoint's `model` and `model_ema`.
 */
import { Effect, Schema } from "effect"
import type { Stage } from "@tinyfusion/core"
import type { HostTensor } from "@tinyfusion/tensor"
import * as MarStateDict from "./MarStateDict.ts"
import * as MarConfig from "./MarConfig.ts"
import { files } from "./ModelArtifact.ts"

export const Fields = {
  family: Schema.Literal("mar"),
  config: MarConfig.MarConfig,
  parameters: Schema.Int
}
/** A MAR artifact's output: the port of stages that read a MAR only (Models.Any takes either family). */
export const Model = Schema.Struct(Fields)
export type Model = typeof Model.Type

/** What reading a MAR needs of a stage's output. */
export const Identity = Schema.Struct({ family: Schema.Literal("mar"), config: MarConfig.MarConfig })
export type Identity = typeof Identity.Type

/** Writes a MAR's weights through a stage context; returns the output fields to merge into the stage's output. */
export const write = Effect.fn("MarArtifact.write")(function*(
  ctx: Stage.Context,
  model: { readonly config: MarConfig.MarConfig; readonly params: HostTensor.HostTree; readonly ema?: HostTensor.HostTree }
) {
  yield* ctx.writeBytes(files.raw, yield* MarStateDict.encode(model.config, model.params))
  if (model.ema !== undefined) yield* ctx.writeBytes(files.ema, yield* MarStateDict.encode(model.config, model.ema))
  return { family: "mar", config: model.config, parameters: MarStateDict.parameterCount(model.config) } satisfies Model
})

/** Reads a MAR artifact's weights: the EMA when asked and present, otherwise the raw weights. */
export const read = Effect.fn("MarArtifact.read")(function*(artifact: Stage.Artifact<Identity>, options: { readonly ema: boolean }) {
  const hasEma = artifact.manifest.files.some((f) => f.name === files.ema)
  const name = options.ema && hasEma ? files.ema : files.raw
  const loaded = yield* MarStateDict.decode(artifact.output.config, yield* artifact.bytes(name))
  return { family: "mar" as const, config: artifact.output.config, params: loaded.params, ema: name === files.ema }
})
