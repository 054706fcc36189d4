/**
 * Sampling speed of a denoiser, as the paper reports it (Fig. 4, Table 1's
 * "it/s"): one iteration is one forward pass of the denoiser on a batch of
 * samples, so iterations/s = 1000 / (median ms of one forward), and
 * images/s = iterations/s × images per batch / sampler steps per image.
 * Classifier-free guidance runs the conditional and unconditional halves in
 * one doubled batch, so it belongs inside `forward`; `imagesPerBatch` counts
 * the images being made.
 *
 * `forward` is any effect that runs one such pass and ends with a device read
 * (Benchmark.time's requirement: asynchronous backends are timed to
 * completion); warm-up passes absorb kernel compilation. `sampling` times a
 * model's denoiser this way; `interleaved` times several shapes against each
 * other (Fig. 4, Table 1's it/s).
 */
import { Effect, Schema } from "effect"
import { ModelArtifact } from "@tinyfusion/models"
import { Benchmark, Compute, type ComputeError, Rng, tf } from "@tinyfusion/tensor"
import * as Interval from "./Interval.ts"
import * as Sampling from "./Sampling.ts"

export const Options = Schema.Struct({
  /** Images sampled per forward pass (the batch, before any guidance doubling). */
  imagesPerBatch: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Sampler iterations per image (e.g. 250 DDPM steps). */
  steps: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  warmup: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  repetitions: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
})
export type Options = typeof Options.Type

export class InvalidThroughputOptions extends Schema.TaggedError<InvalidThroughputOptions>()("InvalidThroughputOptions", {
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid throughput options: ${this.reason}`
  }
}

export interface Throughput {
  /** Median milliseconds of one forward pass. */
  readonly msPerIt: number
  readonly itPerS: number
  readonly imagesPerS: number
  readonly repetitions: number
}

/** Times `forward` after `warmup` untimed passes. */
export const measure = Effect.fn("Throughput.measure")(function*<E, R>(
  forward: Effect.Effect<unknown, E, R>,
  options: Options
): Effect.fn.Return<Throughput, E | InvalidThroughputOptions, R> {
  const o = yield* Schema.decodeUnknownEffect(Options)(options).pipe(
    Effect.mapError((e) => new InvalidThroughputOptions({ reason: e.message }))
  )
  const timing = yield* Benchmark.time(forward, { warmup: o.warmup, repetitions: o.repetitions })
  const itPerS = 1000 / timing.ms
  return {
    msPerIt: timing.ms,
    itPerS,
    imagesPerS: (itPerS * o.imagesPerBatch) / o.steps,
    repetitions: timing.repetitions
  }
})

export interface SamplingThroughput extends Throughput {
  /** Images per batch (the forward batch is twice this under guidance). */
  readonly batch: number
  readonly forwardBatch: number
  readonly parameters: number
}

/**
 * One iteration of a model's sampler: the denoiser on a batch of `batch`
 * latents — the network forward on the doubled batch and the guidance mix
 * when the scale is above 1 — at a mid-chain timestep, ending in a read of
 * one value. `dispose` frees its input.
 */
const iteration = (compute: Compute["Service"], model: Sampling.Model, sampling: Sampling.Options, batch: number) => {
  const { inputSize: s, inChannels: c, numClasses } = model.config
  const labels = Array.from({ length: batch }, (_, i) => i % numClasses)
  const t = Array.from({ length: batch }, () => (model.family === "dit" ? 500 : 0.5))
  const denoise = Sampling.denoiser(model, sampling, labels)
  const x = Rng.normalTensor(Rng.stream(0, "throughput/x"), 0, [batch, s, s, c]) as tf.Tensor4D
  const forward = compute.scoped(Effect.gen(function*() {
    yield* compute.read(tf.slice(denoise(x, t), [0, 0, 0, 0], [1, 1, 1, 1]))
  }))
  return { forward, dispose: Effect.sync(() => x.dispose()) }
}

/**
 * The sampling speed of a model: one iteration is `iteration`'s pass;
 * images/s counts `Sampling.evaluations` iterations per image.
 */
export const sampling = Effect.fn("Throughput.sampling")(function*(
  model: Sampling.Model,
  sampling: Sampling.Options,
  options: { readonly batch: number; readonly warmup: number; readonly repetitions: number }
): Effect.fn.Return<SamplingThroughput, ComputeError | InvalidThroughputOptions, Compute> {
  const compute = yield* Compute
  const { forward, dispose } = iteration(compute, model, sampling, options.batch)
  const timing = yield* measure(forward, {
    imagesPerBatch: options.batch,
    steps: Sampling.evaluations(sampling),
    warmup: options.warmup,
    repetitions: options.repetitions
  }).pipe(Effect.ensuring(dispose))
  return {
    ...timing,
    batch: options.batch,
    forwardBatch: sampling.cfgScale > 1 ? 2 * options.batch : options.batch,
    parameters: ModelArtifact.parameterCount(model.config)
  }
})

/** A shape's speed from interleaved rounds. */
export interface Rounds {
  /** Iterations per second in each round, in round order. */
  readonly itPerS: ReadonlyArray<number>
  /** The process's CPU milliseconds of each round's pass: steadier than wall time on a shared machine (wasm runs on one thread). */
  readonly cpuMs: ReadonlyArray<number>
  /** Their median, with its distribution-free 95% interval (Interval.medianInterval). */
  readonly median: Interval.Interval
  /** The median's images per second (`Sampling.evaluations` iterations per image). */
  readonly imagesPerS: number
  readonly parameters: number
}

/**
 * The sampling speed of several models measured together: `warmup` untimed
 * passes of each, then `rounds` rounds that each time one pass of every
 * model in the order given (28, 21, 14, 7, 28, 21, …), so that load which
 * comes and goes during the measurement falls on every model alike. Speed
 * is a property of a shape, not of weights: measure each shape once per
 * run and share the figure.
 */
export const interleaved = Effect.fn("Throughput.interleaved")(function*(
  models: ReadonlyArray<{ readonly model: Sampling.Model; readonly sampling: Sampling.Options }>,
  options: { readonly batch: number; readonly warmup: number; readonly rounds: number }
): Effect.fn.Return<ReadonlyArray<Rounds>, ComputeError | InvalidThroughputOptions, Compute> {
  if (!Number.isSafeInteger(options.rounds) || options.rounds < 1 || !Number.isSafeInteger(options.batch) || options.batch < 1) {
    return yield* new InvalidThroughputOptions({ reason: `rounds (${options.rounds}) and batch (${options.batch}) must be positive integers` })
  }
  const compute = yield* Compute
  const passes = models.map((m) => iteration(compute, m.model, m.sampling, options.batch))
  const ms = models.map(() => new Array<number>())
  const cpuMs = models.map(() => new Array<number>())
  yield* Effect.gen(function*() {
    for (let w = 0; w < options.warmup; w++) for (const p of passes) yield* p.forward
    for (let r = 0; r < options.rounds; r++) {
      for (const [i, p] of passes.entries()) {
        const start = performance.now()
        const cpu = process.cpuUsage()
        yield* p.forward
        const used = process.cpuUsage(cpu)
        ms[i]!.push(performance.now() - start)
        cpuMs[i]!.push((used.user + used.system) / 1000)
      }
    }
  }).pipe(Effect.ensuring(Effect.forEach(passes, (p) => p.dispose)))
  return models.map((m, i) => {
    const itPerS = ms[i]!.map((t) => 1000 / t)
    const median = Interval.medianInterval(itPerS)
    return {
      itPerS,
      cpuMs: cpuMs[i]!,
      median,
      imagesPerS: (median.value * options.batch) / Sampling.evaluations(m.sampling),
      parameters: ModelArtifact.parameterCount(m.model.config)
    }
  })
})

/**
 * The speed-up of one shape over another measured in the same rounds: the
 * median of the per-round ratios (each round's two passes ran under the same
 * load), with its distribution-free interval.
 */
export const speedup = (fast: ReadonlyArray<number>, base: ReadonlyArray<number>, level = 0.95): Interval.Interval =>
  Interval.medianInterval(fast.map((x, r) => x / base[r]!), level)
