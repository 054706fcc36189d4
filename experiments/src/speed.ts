/**
 * The `sampling-speed` stage of Figure 4: sampling it/s of a model shape at
 * one depth (freshly initialised weights: the speed does not depend on
 * them), stored like every other result so that a rerun reports the same
 * figures rather than timing again.
 */
import { Effect, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Sampling, Throughput } from "@tinyfusion/eval"
import { Config, Init, ModelArtifact } from "@tinyfusion/models"
import { Compute, ParamTree } from "@tinyfusion/tensor"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

export const SpeedConfig = Schema.Struct({
  family: ModelArtifact.Family,
  model: Config.Config,
  sampling: Sampling.Options,
  /** Images per batch (the forward batch doubles under guidance). */
  batch: PositiveInt,
  repetitions: PositiveInt
})
export type SpeedConfig = typeof SpeedConfig.Type

export const SpeedOutput = Schema.Struct({
  depth: PositiveInt,
  parameters: PositiveInt,
  itPerS: Schema.Finite,
  imagesPerS: Schema.Finite,
  backend: Schema.String
})

export const SpeedStage = Stage.make({
  name: "sampling-speed",
  module: import.meta.url,
  config: SpeedConfig,
  output: SpeedOutput,
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const params = Init.params(config.model, 0)
      const timed = yield* Throughput.sampling(
        { family: config.family, config: config.model, params },
        config.sampling,
        { batch: config.batch, warmup: 1, repetitions: config.repetitions }
      ).pipe(Effect.ensuring(Effect.sync(() => ParamTree.dispose(params))))
      yield* ctx.metric("itPerS", timed.itPerS)
      yield* ctx.metric("imagesPerS", timed.imagesPerS)
      return {
        depth: config.model.depth,
        parameters: timed.parameters,
        itPerS: timed.itPerS,
        imagesPerS: timed.imagesPerS,
        backend: compute.backend
      }
    })
})
