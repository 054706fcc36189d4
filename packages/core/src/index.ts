/**
 * The backbone of every stage: the artifact store, stages (input ports,
 * code-aware keys, cache hits, locks, retries), the declared graph of stage
 * nodes, self-describing methods, the checkpointed loop and progress reports.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { NodeServices } from "@effect/platform-node"
 * import { ArtifactStore, Checkpoint, Graph, Stage } from "@tinyfusion/core"
 * import { HostTensor } from "@tinyfusion/tensor"
 *
 * // (Latents is another stage; params, m, v and trainStep come from your model code.)
 * // A stage: name, its module (its code is part of every key), config and output Schemas, input ports, effect.
 * const Train = Stage.make({
 *   name: "train",
 *   module: import.meta.url,
 *   config: Schema.Struct({ steps: Schema.Int, seed: Schema.Int }),
 *   output: Schema.Struct({ loss: Schema.Number }),
 *   inputs: { latents: Latents.output },           // a port: any artifact whose output decodes with it
 *   run: (config, { latents }, ctx) =>
 *     Effect.gen(function*() {
 *       const data = yield* latents.tensors("latents.safetensors")   // HostTree, verified
 *       const done = yield* Checkpoint.loop(ctx, {
 *         steps: config.steps,
 *         every: 100,                                // checkpoint every 100 steps
 *         data: Schema.Struct({ adamStep: Schema.Int }),
 *         init: Effect.sync(() => ({ tensors: { params, m, v }, data: { adamStep: 0 } })),
 *         step: (state, step) => trainStep(state, step), // → { state, loss }; randomness from `step`
 *         nonFinite: "skip"                          // or "rollback" | "fail"
 *       })                                           // resumes from the newest checkpoint on rerun
 *       const host = yield* HostTensor.treeFromTensors(done.state.tensors)
 *       yield* ctx.writeTensors("params.safetensors", host)
 *       yield* ctx.metric("finalLoss", done.lastLoss)
 *       return { loss: done.lastLoss }
 *     })
 * })
 *
 * const program = Effect.gen(function*() {
 *   // The pipeline as values: keys and a plan before anything runs, then the artifacts.
 *   const latents = Graph.node(Latents, { size: 8 }, {})
 *   const train = Graph.node(Train, { steps: 1000, seed: 0 }, { latents })
 *   const runner = yield* Graph.runner
 *   yield* runner.plan([train])                      // every node, its key, stored or not
 *   const trained = yield* runner.run(train)         // latents first; each key once
 *   trained.output.loss                              // typed by the output Schema
 *   yield* (yield* ArtifactStore).keep("my-run", [yield* runner.key(latents), trained.key])
 * }).pipe(Effect.provide(ArtifactStore.layer("./runs")), Effect.provide(NodeServices.layer))
 * // CLI commands get the store of --store from packages/cli GlobalFlags (already provided).
 * ```
 *
 * One `Checkpoint.loop` per stage: its checkpoints live under the stage's key.
 */
export { ArtifactStore, CorruptArtifact } from "./ArtifactStore.ts"
export type { CheckpointListing, Inspection, Listing, Removal, RunRecord, Staging, Tensors } from "./ArtifactStore.ts"
export * as Checkpoint from "./Checkpoint.ts"
export * as Fingerprint from "./Fingerprint.ts"
export * as Graph from "./Graph.ts"
export * as Lock from "./Lock.ts"
export * as Manifest from "./Manifest.ts"
export * as Method from "./Method.ts"
export * as Progress from "./Progress.ts"
export * as Retry from "./Retry.ts"
export * as Stage from "./Stage.ts"
export * as StoreBenchmark from "./StoreBenchmark.ts"
export { StoreError } from "./StoreError.ts"
