/**
 * A pruning method: given a block stack with its teacher weights, a target
 * (keep k blocks, or an N:M scheme), a fixed calibration set and a latent
 * source, it decides which blocks to keep. Methods are values; the
 * `Pruners` registry (Pruners.ts) holds them by name, and a layer adds one.
 *
 * A method reads its own options (the stage config's `options` record)
 * through its own Schema, so adding a method edits no shared config.
 */
import { Effect, Schema } from "effect"
import type { ArtifactStore, Checkpoint, CorruptArtifact, Stage, StoreError } from "@tinyfusion/core"
import type { CalibrationLoss } from "@tinyfusion/eval"
import type { Compute, ComputeError, ParamTree } from "@tinyfusion/tensor"
import type { BlockStack } from "./BlockStack.ts"
import type { PruneDecision } from "./Decision.ts"
import type { LatentSource } from "./LatentSource.ts"
import type * as Selection from "./Selection.ts"

export interface Request {
  readonly stack: BlockStack
  /** The teacher's weights on the device. Shared: a method must not release them. */
  readonly params: ParamTree.ParamTree
  readonly target: Selection.Target
  /** The fixed calibration set (loss-based and similarity-based methods). */
  readonly calibration: CalibrationLoss.CalibrationSet
  /** Training batches (mask learning). */
  readonly source: LatentSource
  /** The method's options as the config gives them; decode with `options`. */
  readonly options: unknown
  readonly seed: number
  /** Iterations of an iterative method (mask-learning steps). */
  readonly iterations: number
  /** The running stage: checkpointed loops (Checkpoint.loop), metrics, extra files. */
  readonly ctx: Stage.Context
}

export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  method: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `invalid options for pruner ${this.method}: ${this.issue}`
  }
}

export class UnsupportedTarget extends Schema.TaggedError<UnsupportedTarget>()("UnsupportedTarget", {
  method: Schema.String,
  target: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `pruner ${this.method} cannot ${this.target}: ${this.reason}`
  }
}

/** The method ran but could not decide (e.g. every sampled mask had a non-finite loss). */
export class PruneFailed extends Schema.TaggedError<PruneFailed>()("PruneFailed", {
  method: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `pruner ${this.method} failed: ${this.reason}`
  }
}

export type MethodError =
  | InvalidOptions
  | UnsupportedTarget
  | PruneFailed
  | Checkpoint.NonFiniteLoss
  | StoreError
  | CorruptArtifact
  | ComputeError

export interface Method {
  /** The name configs and grids use ("learnable", "shortgpt", …). */
  readonly name: string
  /** One line for listings. */
  readonly description: string
  readonly prune: (request: Request) => Effect.Effect<PruneDecision, MethodError, Compute | ArtifactStore>
}

/** Decodes a method's options; unknown fields are rejected, so a misspelt option is named. */
export const options = <A, I>(method: string, schema: Schema.Codec<A, I>, given: unknown): Effect.Effect<A, InvalidOptions> =>
  Schema.decodeUnknownEffect(schema)(given ?? {}, { onExcessProperty: "error", errors: "all" }).pipe(
    Effect.mapError((e) => new InvalidOptions({ method, issue: e.message.replace(/\s*\n\s*/g, " ") }))
  )
