/**
 * The `sampling-speed` stage: sampling it/s of every distinct architecture
 * shape of a run, measured together in interleaved rounds
 * (Throughput.interleaved: 28, 21, 14, 7, 28, 21, …) so that background load
 * falls on every shape alike. Speed belongs to a shape, not to a cell: Fig. 4
 * and Table 1's it/s read this one measurement, and cells of the same shape
 * share its figure. Weights are freshly initialised (speed does not depend on
 * them); the shallower shapes of one width run the first blocks of the
 * deepest one's weights. Stored like every other result, so a rerun reports
 * the same figures rather than timing again.
 */
import { Effect, Schema } from "effect"
import { Stage } from "@tinyfusion/core"
import { Interval, Sampling, Throughput } from "@tinyfusion/eval"
import { Config, DiT, Init, ModelArtifact } from "@tinyfusion/models"
import { Compute, ParamTree } from "@tinyfusion/tensor"

const PositiveInt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

/** An architecture: the network family and its config (depth, width, …). */
export const Shape = Schema.Struct({ family: ModelArtifact.Family, model: Config.Config })
export type Shape = typeof Shape.Type

export const SpeedConfig = Schema.Struct({
  /** Timed in this order within every round. */
  shapes: Schema.Array(Shape).check(Schema.isMinLength(1)),
  /** DiT's sampler; a SiT shape samples with the SDE on as many grid points (the evaluation's SiT protocol). */
  sampling: Sampling.Options,
  /** Images per batch (the forward batch doubles under guidance). */
  batch: PositiveInt,
  /** Untimed passes of each shape before the first round. */
  warmup: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  rounds: PositiveInt
})
export type SpeedConfig = typeof SpeedConfig.Type

export const ShapeSpeed = Schema.Struct({
  ...Shape.fields,
  parameters: PositiveInt,
  /** Iterations per second in each round. */
  itPerS: Schema.Array(Schema.Finite),
  /** Their median and its distribution-free interval at `level` (Interval.medianInterval). */
  median: Schema.Finite,
  lo: Schema.Finite,
  hi: Schema.Finite,
  level: Schema.Finite,
  imagesPerS: Schema.Finite,
  /** The process's CPU milliseconds per iteration, median over rounds (steadier than wall time under load). */
  cpuMs: Schema.Finite
})
export type ShapeSpeed = typeof ShapeSpeed.Type

export const SpeedOutput = Schema.Struct({
  backend: Schema.String,
  /** In the config's order. */
  shapes: Schema.Array(ShapeSpeed)
})

/** Whether two shapes are the same architecture. */
export const sameShape = (a: Shape, b: Shape): boolean =>
  a.family === b.family &&
  ([...new Set([...Object.keys(a.model), ...Object.keys(b.model)])] as Array<keyof Config.Config>).every((k) => a.model[k] === b.model[k])

/** Whether two shapes differ at most in depth. */
const sameButDepth = (a: Shape, b: Shape): boolean => sameShape(a, { ...b, model: { ...b.model, depth: a.model.depth } })

/** Distinct shapes in round order: by family, then width, then depth from deepest to shallowest. */
export const roundOrder = (shapes: ReadonlyArray<Shape>): ReadonlyArray<Shape> => {
  const distinct: Array<Shape> = []
  for (const s of shapes) if (!distinct.some((d) => sameShape(d, s))) distinct.push(s)
  return distinct.sort((a, b) =>
    a.family.localeCompare(b.family) || a.model.hiddenSize - b.model.hiddenSize || b.model.depth - a.model.depth
  )
}

/**
 * Every shape's sampling speed, timed together in interleaved rounds in the
 * order given (`roundOrder`): what the stage stores and `bench depth` prints.
 */
export const measure = Effect.fn("Speed.measure")(function*(
  shapes: ReadonlyArray<Shape>,
  sampling: Sampling.Options,
  options: { readonly batch: number; readonly warmup: number; readonly rounds: number }
) {
  // One set of weights per architecture apart from depth: its deepest shape's.
  const roots: Array<{ readonly shape: Shape; readonly params: ParamTree.ParamTree }> = []
  const rootOf = (s: Shape) => roots.find((r) => sameButDepth(r.shape, s))
  return yield* Effect.gen(function*() {
    for (const s of [...shapes].sort((a, b) => b.model.depth - a.model.depth)) {
      if (rootOf(s) === undefined) roots.push({ shape: s, params: Init.params(s.model, 0) })
    }
    const models = shapes.map((s) => {
      const root = rootOf(s)!
      const kept = DiT.keepBlocks(root.shape.model, root.params, Array.from({ length: s.model.depth }, (_, i) => i))
      return {
        model: { family: s.family, config: s.model, params: kept.params },
        sampling: s.family === "sit" ? { ...sampling, sampler: "sde" as const } : sampling
      }
    })
    const measured = yield* Throughput.interleaved(models, options)
    return shapes.map((s, i): ShapeSpeed => {
      const m = measured[i]!
      return {
        ...s,
        parameters: m.parameters,
        itPerS: m.itPerS,
        median: m.median.value,
        lo: m.median.lo,
        hi: m.median.hi,
        level: m.median.level,
        imagesPerS: m.imagesPerS,
        cpuMs: Interval.median(m.cpuMs)
      }
    })
  }).pipe(Effect.ensuring(Effect.sync(() => roots.forEach((r) => ParamTree.dispose(r.params)))))
})

export const SpeedStage = Stage.make({
  name: "sampling-speed",
  module: import.meta.url,
  config: SpeedConfig,
  output: SpeedOutput,
  run: (config, _inputs, ctx) =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const shapes = yield* measure(config.shapes, config.sampling, config)
      for (const s of shapes) yield* ctx.metric(`itPerS.${s.family}.d${s.model.depth}.w${s.model.hiddenSize}`, s.median)
      return { backend: compute.backend, shapes }
    })
})
