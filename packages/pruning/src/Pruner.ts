/**
 * A pruning method: given a block stack with its teacher weights, a target
 * (keep k blocks, or an N:M scheme), a fixed calibration set and a latent
 * source, it decides which blocks to keep, and reports its evidence. A
 * method describes itself (core Method): its options Schema with defaults,
 * its evidence Schema, its module. The `Pruners` registry (Pruners.ts)
 * holds methods by name, and a layer adds one: adding a pruner is one file.
 */
import { type Effect, Schema } from "effect"
import { type ArtifactStore, type Checkpoint, type CorruptArtifact, Method as CoreMethod, type Stage, type StoreError } from "@tinyfusion/core"
import type { CalibrationLoss } from "@tinyfusion/eval"
import type { Config } from "@tinyfusion/models"
import type { Compute, ComputeError, HostTensor, ParamTree } from "@tinyfusion/tensor"
import type { BlockStack } from "./BlockStack.ts"
import type { LatentSource } from "./LatentSource.ts"
import type * as Selection from "./Selection.ts"

export interface Request<O> {
  readonly stack: BlockStack
  /** The teacher's weights on the device. Shared: a method must not release them. */
  readonly params: ParamTree.ParamTree
  readonly target: Selection.Target
  /** The fixed calibration set (loss-based and similarity-based methods). */
  readonly calibration: CalibrationLoss.CalibrationSet
  /** Training batches (mask learning). */
  readonly source: LatentSource
  /** The method's options, decoded by its Schema (defaults filled in). */
  readonly options: O
  readonly seed: number
  /** The running stage: checkpointed loops (Checkpoint.loop), metrics, extra files. */
  readonly ctx: Stage.Context
}

/** A method's decision: the teacher blocks kept (ascending), and its evidence. */
export interface Decided<V> {
  readonly kept: ReadonlyArray<number>
  readonly evidence: V
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
  | UnsupportedTarget
  | PruneFailed
  | Checkpoint.NonFiniteLoss
  | StoreError
  | CorruptArtifact
  | ComputeError

/** A model on the host: what a pruner cuts and what its decision makes. */
export interface HostModel {
  readonly config: Config.Config
  readonly params: HostTensor.HostTree
}

export interface Method<O = any, V = any> extends CoreMethod.Method<O, V> {
  readonly prune: (request: Request<O>) => Effect.Effect<Decided<V>, MethodError, Compute | ArtifactStore>
  /**
   * The pruned model of a decision, when it is not the kept blocks renumbered
   * (width pruning keeps every block and narrows them); throws, naming what
   * does not fit, when the evidence does not fit the teacher.
   */
  readonly model?: (teacher: HostModel, evidence: V) => HostModel
}

/** A method, its option and evidence types inferred from its Schemas. */
export const make = <O, V>(method: Method<O, V>): Method<O, V> => method

/** The kind of method in messages ("no pruner named …"). */
export const kind = "pruner"

/** A method's options from a config: unknown fields are named, missing ones take their defaults. */
export const options = <O>(method: Method<O, any>, given: unknown) => CoreMethod.options(kind, method, given)
