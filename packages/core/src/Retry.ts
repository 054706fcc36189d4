/**
 * Transient failures and how they are retried. A failure is transient when a
 * second attempt may succeed: a tensor computation failing on the device
 * (`ComputeError`: device lost, out of memory), a store I/O error marked
 * transient (busy, EIO), or a stage's own `Transient`. A retried stage starts
 * again from its newest checkpoint, so a retry costs at most the steps since.
 */
import { Context, Duration, Effect, Schedule, Schema } from "effect"

/** A stage's own transient failure (e.g. a flaky mount while reading data). */
export class Transient extends Schema.TaggedError<Transient>()("Transient", {
  operation: Schema.String,
  cause: Schema.Defect()
}) {
  override get message(): string {
    return `${this.operation} failed (transient): ${String(this.cause)}`
  }
}

export const isTransient = (error: unknown): boolean => {
  if (typeof error !== "object" || error === null || !("_tag" in error)) return false
  switch (error._tag) {
    case "Transient":
    case "ComputeError":
      return true
    case "StoreError":
      return "transient" in error && error.transient === true
    default:
      return false
  }
}

/** The delays between attempts; the default tries 3 more times, 1 s, 2 s, 4 s apart. */
export const Policy = Context.Reference<Schedule.Schedule<unknown, unknown>>("@tinyfusion/core/Retry/Policy", {
  defaultValue: () => Schedule.max([Schedule.exponential(Duration.seconds(1)), Schedule.recurs(3)])
})

/**
 * Retries `self` on transient failures under the current `Policy`, logging
 * each; `onRetry` runs before every new attempt.
 */
export const transient = <A, E, R>(self: Effect.Effect<A, E, R>, onRetry: Effect.Effect<void> = Effect.void) =>
  Effect.gen(function*() {
    const policy = yield* Policy
    let first = true
    return yield* Effect.suspend(() => {
      const attempt = first ? self : Effect.andThen(onRetry, self)
      first = false
      return attempt
    }).pipe(
      Effect.tapError((e) =>
        isTransient(e) ? Effect.logWarning(`transient failure: ${(e as { message?: string }).message ?? String(e)}`) : Effect.void
      ),
      Effect.retry({ schedule: policy, while: isTransient })
    )
  })
