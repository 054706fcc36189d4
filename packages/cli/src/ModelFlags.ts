/**
 * The flags that name a model for `eval` and `throughput`, and how they are
 * resolved: a model artifact of the store by key (whatever stage made it:
 * pre-training, pruning, recovery), or a checkpoint file brought into the
 * store by the `model-file` stage (its config from the file's metadata).
 */
import { Effect, Option, Schema } from "effect"
import { Flag } from "effect/cli"
import { Stage } from "@tinyfusion/core"
import { ModelArtifact, ModelFile } from "@tinyfusion/models"

export const flags = {
  modelKey: Flag.String("model-key").pipe(
    Flag.withDescription("Key of a model artifact in the store (`tinyfusion store ls` lists them)"),
    Flag.optional
  ),
  modelFile: Flag.String("model-file").pipe(
    Flag.withDescription(
      "A checkpoint file: a reference .pt or safetensors (config from its shapes), our import, or a model artifact's model/ema.safetensors"
    ),
    Flag.optional
  ),
  family: Flag.Literals("family", ["dit", "sit"]).pipe(
    Flag.withDescription("The model's family: checked against the one its file or artifact records; needed only for a file that records none (default dit)"),
    Flag.optional
  )
}

export interface Options {
  readonly modelKey: Option.Option<string>
  readonly modelFile: Option.Option<string>
  readonly family: Option.Option<ModelArtifact.Family>
}

export class ModelChoice extends Schema.TaggedError<ModelChoice>()("ModelChoice", {
  reason: Schema.String
}) {
  override get message(): string {
    return `which model? ${this.reason}`
  }
}

/** The named model artifact and the stage it stands for (a stand-in for a key's producer, or `model-file`). */
export const resolve = Effect.fn("ModelFlags.resolve")(function*(o: Options) {
  if (Option.isSome(o.modelKey) === Option.isSome(o.modelFile)) {
    return yield* new ModelChoice({ reason: "give either --model-key KEY or --model-file FILE" })
  }
  if (Option.isSome(o.modelKey)) {
    const opened = yield* ModelArtifact.open(o.modelKey.value)
    const family = opened.artifact.output.family
    if (Option.isSome(o.family) && o.family.value !== family) {
      return yield* new ModelChoice({ reason: `${o.modelKey.value} holds a ${family} model, not a ${o.family.value} one` })
    }
    return { stage: opened.stage as Stage.Any, artifact: opened.artifact as Stage.Artifact<ModelArtifact.Output> }
  }
  const { described, artifact } = yield* ModelFile.store(Option.getOrThrow(o.modelFile), { family: Option.getOrUndefined(o.family) })
  return { stage: ModelFile.stage(described) as Stage.Any, artifact: artifact as Stage.Artifact<ModelArtifact.Output> }
})
