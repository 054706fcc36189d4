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
 * model's denoiser this way.
 */
import { Effect, Schema } from "effect"
import { ModelArtifact } from "@tinyfusion/models"
import { Benchmark, Compute, type ComputeError, Rng, tf } from "@tinyfusion/tensor"
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
 * The sampling speed of a model: one iteration is the sampler's denoiser on a
 * batch of `batch` latents — the network forward on the doubled batch and the
 * guidance mix when the scale is above 1 — at a mid-chain timestep, ending in
 * a read of one value. images/s counts `Sampling.evaluations` iterations per image.
 */
export const sampling = Effect.fn("Throughput.sampling")(function*(
  model: Sampling.Model,
  sampling: Sampling.Options,
  options: { readonly batch: number; readonly warmup: number; readonly repetitions: number }
): Effect.fn.Return<SamplingThroughput, ComputeError | InvalidThroughputOptions, Compute> {
  const compute = yield* Compute
  const { inputSize: s, inChannels: c, numClasses } = model.config
  const labels = Array.from({ length: options.batch }, (_, i) => i % numClasses)
  const t = Array.from({ length: options.batch }, () => (model.family === "dit" ? 500 : 0.5))
  const denoise = Sampling.denoiser(model, sampling, labels)
  const x = Rng.normalTensor(Rng.stream(0, "throughput/x"), 0, [options.batch, s, s, c]) as tf.Tensor4D
  const forward = compute.scoped(Effect.gen(function*() {
    yield* compute.read(tf.slice(denoise(x, t), [0, 0, 0, 0], [1, 1, 1, 1]))
  }))
  const timing = yield* measure(forward, {
    imagesPerBatch: options.batch,
    steps: Sampling.evaluations(sampling),
    warmup: options.warmup,
    repetitions: options.repetitions
  }).pipe(Effect.ensuring(Effect.sync(() => x.dispose())))
  return {
    ...timing,
    batch: options.batch,
    forwardBatch: sampling.cfgScale > 1 ? 2 * options.batch : options.batch,
    parameters: ModelArtifact.parameterCount(model.config)
  }
})
