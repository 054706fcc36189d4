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
import * as Checkpoint from "./Checkpoint.ts"
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
    version: 1,
    config: ModelFileConfig,
    output: ModelArtifact.Output,
    run: (config, _inputs, ctx) =>
      Effect.gen(function*() {
        const found = Manifest.sha256(bytes)
        if (found !== config.sha256) return yield* new ModelFileChanged({ expected: config.sha256, found })
        const loaded = yield* Checkpoint.decode(config.config, bytes)
        return yield* ModelArtifact.write(ctx, { family: config.family, config: config.config, params: loaded.params })
      })
  })

/** A family asked for that is not the one a file records. */
export class FamilyMismatch extends Schema.TaggedError<FamilyMismatch>()("FamilyMismatch", {
  file: Schema.String,
  recorded: Schema.String,
  asked: Schema.String
}) {
  override get message(): string {
    return `${this.file} holds a ${this.recorded} model (its metadata records the family), not a ${this.asked} one`
  }
}

/**
 * The family of a checkpoint file: the one its metadata records (our files
 * do), which `asked` must match; for a file that records none (a reference
 * checkpoint imported without --family), `asked`, by default dit.
 */
export const family = Effect.fn("ModelFile.family")(function*(
  metadata: Readonly<Record<string, string>>,
  asked: ModelArtifact.Family | undefined,
  file: string
) {
  const text = metadata[Checkpoint.familyKey]
  if (text === undefined) return asked ?? "dit"
  const recorded = Schema.decodeUnknownOption(ModelArtifact.Family)(text)
  if (Option.isNone(recorded)) return yield* new FamilyMismatch({ file, recorded: JSON.stringify(text), asked: asked ?? "dit or sit" })
  if (asked !== undefined && asked !== recorded.value) return yield* new FamilyMismatch({ file, recorded: recorded.value, asked })
  return recorded.value
})

/**
 * The stage and its config for a file's bytes: the config and the family
 * from the file's metadata (`family` checks `asked` against it), the config
 * checked against the tensors when the stage runs. `file` names the file in
 * errors.
 */
export const describe = Effect.fn("ModelFile.describe")(function*(bytes: Uint8Array, asked: ModelArtifact.Family | undefined, file: string) {
  const parsed = yield* Safetensors.decode(bytes)
  const stored = yield* Checkpoint.storedConfig(parsed.metadata)
  if (Option.isNone(stored)) {
    return yield* new Config.InvalidConfig({
      reason: `${file} carries no ${Checkpoint.configKey} metadata; bring a reference checkpoint in with \`tinyfusion checkpoint import\` first`
    })
  }
  const recorded = yield* family(parsed.metadata, asked, file)
  return { stage: stage(bytes), config: { family: recorded, config: stored.value, sha256: Manifest.sha256(bytes) } satisfies ModelFileConfig }
})
