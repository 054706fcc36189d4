/**
 * A checkpoint file brought into the store as a model artifact (the
 * `model-file` stage), so that a model made elsewhere — a file from
 * `tinyfusion checkpoint import` or `export`, or a model artifact's own
 * safetensors — is evaluated or pruned like one trained here. The file must
 * carry its config in its metadata (our files do). The key covers the file's
 * sha256, the family and the config, not its path: a moved file keeps its key.
 */
import { Effect, Option, Schema } from "effect"
import { Manifest, Stage } from "@tinyfusion/core"
import { Safetensors } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import * as Config from "./Config.ts"
import * as ModelArtifact from "./ModelArtifact.ts"

export const ModelFileConfig = Schema.Struct({
  family: ModelArtifact.Family,
  config: Config.Config,
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/))
})
export type ModelFileConfig = typeof ModelFileConfig.Type

/** The file given to the stage is not the one its config names. */
export class ModelFileChanged extends Schema.TaggedError<ModelFileChanged>()("ModelFileChanged", {
  expected: Schema.String,
  found: Schema.String
}) {
  override get message(): string {
    return `the model file's sha256 is ${this.found}, the stage config names ${this.expected}`
  }
}

/** The stage that stores `bytes` (a checkpoint file's contents) as a model artifact. */
export const stage = (bytes: Uint8Array) =>
  Stage.make({
    name: "model-file",
    module: import.meta.url,
    config: ModelFileConfig,
    output: ModelArtifact.Model,
    run: (config, _inputs, ctx) =>
      Effect.gen(function*() {
        const found = Manifest.sha256(bytes)
        if (found !== config.sha256) return yield* new ModelFileChanged({ expected: config.sha256, found })
        const loaded = yield* StateDict.decode(config.config, bytes)
        return yield* ModelArtifact.write(ctx, { family: config.family, config: config.config, params: loaded.params })
      })
  })

/**
 * The stage and its config for a file's bytes: the config from the file's
 * metadata, checked against the tensors when the stage runs. `file` names
 * the file in errors.
 */
export const describe = Effect.fn("ModelFile.describe")(function*(bytes: Uint8Array, family: ModelArtifact.Family, file: string) {
  const parsed = yield* Safetensors.decode(bytes)
  const stored = yield* StateDict.storedConfig(parsed.metadata)
  if (Option.isNone(stored)) {
    return yield* new Config.InvalidConfig({
      reason: `${file} carries no ${StateDict.configKey} metadata; bring a reference checkpoint in with \`tinyfusion checkpoint import\` first`
    })
  }
  return { stage: stage(bytes), config: { family, config: stored.value, sha256: Manifest.sha256(bytes) } satisfies ModelFileConfig }
})
