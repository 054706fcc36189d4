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
 * A stage that reads a model takes the producing stage as a parameter (any
 * stage with this output); `open` finds a model artifact by key alone.
 */
import { Effect, Option, Schema } from "effect"
import { ArtifactStore, Manifest, Stage } from "@tinyfusion/core"
import type { HostTensor } from "@tinyfusion/tensor"
import * as Checkpoint from "./Checkpoint.ts"
import * as Config from "./Config.ts"

export const Family = Schema.Literals(["dit", "sit"])
export type Family = typeof Family.Type

/** The output fields of any stage that produces a model. */
export const Fields = {
  family: Family,
  config: Config.Config,
  parameters: Schema.Int
}
export const Output = Schema.Struct(Fields)
export type Output = typeof Output.Type

/** What reading a model needs of a stage's output (any stage whose output has these fields holds a model). */
export const Identity = Schema.Struct({ family: Family, config: Config.Config })
export type Identity = typeof Identity.Type

export const files = { raw: "model.safetensors", ema: "ema.safetensors" } as const

/** Parameters of a model of this shape: every tensor of the reference state_dict, pos_embed included. */
export const parameterCount = (config: Config.Config): number =>
  Checkpoint.referenceShapes(config).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)

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
  const metadata = { [Checkpoint.familyKey]: model.family }
  yield* ctx.writeBytes(files.raw, yield* Checkpoint.encode(model.config, model.params, { metadata }))
  if (model.ema !== undefined) yield* ctx.writeBytes(files.ema, yield* Checkpoint.encode(model.config, model.ema, { metadata }))
  return { family: model.family, config: model.config, parameters: parameterCount(model.config) } satisfies Output
})

/** Reads a model artifact's weights: the EMA when asked and present, otherwise the raw weights. */
export const read = Effect.fn("ModelArtifact.read")(function*(
  artifact: Stage.Artifact<Identity>,
  options: { readonly ema: boolean }
) {
  const hasEma = artifact.manifest.files.some((f) => f.name === files.ema)
  const name = options.ema && hasEma ? files.ema : files.raw
  const loaded = yield* Checkpoint.decode(artifact.output.config, yield* artifact.bytes(name))
  return { family: artifact.output.family, config: artifact.output.config, params: loaded.params, ema: name === files.ema }
})

/**
 * A stand-in for the stage that made a model artifact: Stage.run accepts an
 * input by its producer's name, so this lets an artifact found by key feed a
 * downstream stage. It never computes (the artifact exists); running it fails.
 */
export const producer = (made: { readonly stage: string; readonly version: number }) =>
  Stage.make({
    name: made.stage,
    version: made.version,
    config: Schema.Json,
    output: Output,
    run: (_config, _inputs, ctx) =>
      Effect.fail(new Stage.ArtifactNotFound({ stage: made.stage, key: ctx.key, reason: "a stand-in for an existing model artifact computes nothing" }))
  })

/**
 * The model artifact under `key`, whatever stage made it (a key from the
 * command line), verified, with a stand-in for its producer. Fails with
 * Stage.ArtifactNotFound naming the reason when the key holds none.
 */
export const open = Effect.fn("ModelArtifact.open")(function*(key: string) {
  const store = yield* ArtifactStore
  const safe = Option.isSome(Schema.decodeUnknownOption(Manifest.SafeName)(key))
  // A cheap look at the manifest for the producer's name; Stage.open then verifies every file.
  const seen = safe ? yield* store.inspect(key, { hash: false }) : undefined
  const stage = producer(seen?._tag === "Valid" ? seen.manifest : { stage: "model", version: 1 })
  return { stage, artifact: yield* Stage.open(stage, key) }
})
