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
 * completion); warm-up passes absorb kernel compilation.
 */
import { Effect, Schema } from "effect"
import { Benchmark } from "@tinyfusion/tensor"

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
  readonly msPerIteration: number
  readonly iterationsPerSecond: number
  readonly imagesPerSecond: number
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
  const iterationsPerSecond = 1000 / timing.ms
  return {
    msPerIteration: timing.ms,
    iterationsPerSecond,
    imagesPerSecond: (iterationsPerSecond * o.imagesPerBatch) / o.steps,
    repetitions: timing.repetitions
  }
})
