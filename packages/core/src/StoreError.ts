/**
 * A file-system operation of the artifact store failed. `transient` marks the
 * failures worth retrying (busy, interrupted, I/O error, too many open files);
 * the rest (permission denied, disk full, not a directory) need a person.
 */
import { Effect, Schema } from "effect"
import * as PlatformError from "effect/PlatformError"

export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  operation: Schema.String,
  path: Schema.String,
  reason: Schema.String,
  transient: Schema.Boolean
}) {
  override get message(): string {
    return `${this.operation} ${this.path} failed: ${this.reason}`
  }
}

const transientCodes = new Set(["EIO", "EAGAIN", "EBUSY", "EINTR", "ETIMEDOUT", "EMFILE", "ENFILE"])
const transientTags = new Set(["Busy", "TimedOut", "WouldBlock"])

const errnoCode = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string" ? cause.code : undefined

/** The StoreError for a failed platform call. */
export const fromPlatform = (operation: string, path: string) => (error: PlatformError.PlatformError): StoreError => {
  const reason = error.reason
  const code = errnoCode(reason.cause)
  return new StoreError({
    operation,
    path,
    reason: code === undefined ? reason.message : `${code}: ${reason.message}`,
    transient: reason._tag !== "BadArgument" && (transientTags.has(reason._tag) || (code !== undefined && transientCodes.has(code)))
  })
}

/** True when a platform failure is the file or directory not existing. */
export const isNotFound = (error: PlatformError.PlatformError): boolean =>
  error.reason._tag === "NotFound"

/** True when a platform failure is the target already existing. */
export const isAlreadyExists = (error: PlatformError.PlatformError): boolean =>
  error.reason._tag === "AlreadyExists" || errnoCode(error.reason.cause) === "ENOTEMPTY"

/** Maps a platform failure of `operation` on `path` to a StoreError. */
export const mapPlatform = (operation: string, path: string) =>
<A, R>(self: Effect.Effect<A, PlatformError.PlatformError, R>): Effect.Effect<A, StoreError, R> =>
  Effect.mapError(self, fromPlatform(operation, path))
