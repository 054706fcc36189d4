/**
 * The flags that name a model for `eval` and `throughput`, and how they are
 * resolved: a model artifact of the store by key (whatever stage made it:
 * pre-training, pruning, recovery; any family), or a checkpoint file brought
 * into the store by the `model-file` stage (`mar-file` for a MAR; its config
 * from the file's metadata, or its shapes) — either way a graph input that
 * feeds a stage's model port.
 */
import { Effect, Option, Schema } from "effect"
import { Flag } from "effect/cli"
import { Graph, Stage } from "@tinyfusion/core"
import { MarFile, type ModelArtifact, ModelFile, Models } from "@tinyfusion/models"

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
  family: Flag.Literals("family", ["dit", "sit", "mar"]).pipe(
    Flag.withDescription("The model's family: checked against the one its file or artifact records; needed for a MAR file, and for a file that records none (default dit)"),
    Flag.optional
  )
}

export interface Options {
  readonly modelKey: Option.Option<string>
  readonly modelFile: Option.Option<string>
  readonly family: Option.Option<ModelArtifact.Family | "mar">
}

export class ModelChoice extends Schema.TaggedError<ModelChoice>()("ModelChoice", {
  reason: Schema.String
}) {
  override get message(): string {
    return `which model? ${this.reason}`
  }
}

/** The named model as a graph input: an artifact of the store by key, or the model-file node of a file. */
export const resolve = Effect.fn("ModelFlags.resolve")(function*(o: Options) {
  if (Option.isSome(o.modelKey) === Option.isSome(o.modelFile)) {
    return yield* new ModelChoice({ reason: "give either --model-key KEY or --model-file FILE" })
  }
  if (Option.isSome(o.modelKey)) {
    const key = o.modelKey.value
    const opened = yield* Stage.as(Models.Any, yield* Stage.open(key), { stage: "tinyfusion", input: "--model-key" })
    const family = opened.output.family
    if (Option.isSome(o.family) && o.family.value !== family) {
      return yield* new ModelChoice({ reason: `${key} holds a ${family} model, not a ${o.family.value} one` })
    }
    return Graph.existing(key)
  }
  const path = Option.getOrThrow(o.modelFile)
  if (Option.contains(o.family, "mar")) {
    const loaded = yield* MarFile.read(path)
    return Graph.node(MarFile.stage(loaded), yield* MarFile.stageConfig(loaded), {})
  }
  const family = Option.getOrUndefined(Option.flatMap(o.family, (f) => (f === "mar" ? Option.none() : Option.some(f))))
  const described = yield* ModelFile.inspect(path, { family })
  return Graph.node(ModelFile.stage(described), ModelFile.stageConfig(described), {})
})

/** The named model's artifact (imported into the store first for a file), checked to hold a model of any family. */
export const artifact = Effect.fn("ModelFlags.artifact")(function*(o: Options) {
  const runner = yield* Graph.runner
  const opened = yield* runner.artifact(yield* resolve(o))
  return yield* Stage.as(Models.Any, opened, { stage: "tinyfusion", input: Option.isSome(o.modelKey) ? "--model-key" : "--model-file" })
})
