/**
 * The compute resource every stage runs on. TensorFlow.js keeps one global
 * engine per process, so a Compute layer owns it for its lifetime: it starts a
 * backend when built and resets the engine when released, and only one Compute
 * layer may be live in a process at a time.
 */
import { Context, Effect, Exit, Layer, Option, Schema, type Scope } from "effect"
import { startBackend, type StartedBackend } from "./backends.ts"
import { tf, type TensorContainer, tidy } from "./tf.ts"

/** Backends in the order `Compute.auto` tries them. */
export const backendNames = ["node-gpu", "webgpu", "node", "wasm", "cpu"] as const
export const BackendName = Schema.Literals(backendNames)
export type BackendName = typeof BackendName.Type

export class BackendUnavailable extends Schema.TaggedError<BackendUnavailable>()("BackendUnavailable", {
  backend: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `backend ${this.backend} is unavailable: ${this.reason}`
  }
}

/** A tensor computation failed on the device (device lost, out of memory, kernel error). */
export class ComputeError extends Schema.TaggedError<ComputeError>()("ComputeError", {
  backend: Schema.String,
  operation: Schema.String,
  cause: Schema.Defect()
}) {
  override get message(): string {
    return `${this.operation} failed on ${this.backend}: ${String(this.cause)}`
  }
}

export interface Skipped {
  readonly backend: BackendName
  readonly reason: string
}

export interface MemoryFigures {
  /** Live tensors in the engine. */
  readonly tensors: number
  /** Bytes held by live tensors. */
  readonly bytes: number
  /** Bytes the device allocated (WebGPU buffers, the wasm heap), when the backend says. */
  readonly deviceBytes: number | undefined
  /** Resident set size of the process. */
  readonly processRss: number
}

export class Compute extends Context.Service<Compute, {
  readonly backend: BackendName
  /** Human description of the device, e.g. "WebAssembly SIMD, 1 thread on AMD EPYC". */
  readonly device: string
  /** True when the backend runs on an accelerator rather than the host CPU. */
  readonly hardware: boolean
  /** Backends that were tried before this one and why they were passed over. */
  readonly skipped: ReadonlyArray<Skipped>
  readonly memory: Effect.Effect<MemoryFigures>
  /**
   * Runs a synchronous tensor function; every tensor it creates is released
   * except those it returns.
   */
  readonly tidy: <A>(f: () => A) => A
  /**
   * Runs an effect that may await device reads; every tensor created while it
   * runs is released except those in its result (all of them if it fails).
   * Tensor work is single-fibre: do not interleave two of these.
   */
  readonly scoped: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Downloads a tensor's values; waits for the device. */
  readonly read: (t: tf.Tensor) => Effect.Effect<Float32Array, ComputeError>
}>()("@tinyfusion/tensor/Compute") {
  static readonly webgpu: Layer.Layer<Compute, BackendUnavailable> = Layer.effect(Compute, acquire("webgpu", []))
  static readonly wasm: Layer.Layer<Compute, BackendUnavailable> = Layer.effect(Compute, acquire("wasm", []))
  static readonly cpu: Layer.Layer<Compute, BackendUnavailable> = Layer.effect(Compute, acquire("cpu", []))
  static readonly nodeGpu: Layer.Layer<Compute, BackendUnavailable> = Layer.effect(Compute, acquire("node-gpu", []))
  static readonly node: Layer.Layer<Compute, BackendUnavailable> = Layer.effect(Compute, acquire("node", []))

  /**
   * The best backend that actually initialises here. Software GPU adapters
   * (lavapipe, SwiftShader) are passed over: wasm is faster on the same CPU.
   */
  static readonly auto: Layer.Layer<Compute, BackendUnavailable> = Compute.autoWith(startBackend)

  /** `auto` over the backends `start` starts: what a test uses to fake the machine it runs on. */
  static autoWith(start: Start): Layer.Layer<Compute, BackendUnavailable> {
    return Layer.effect(
      Compute,
      Effect.gen(function*() {
        const skipped: Array<Skipped> = []
        for (const name of backendNames) {
          const attempt = yield* acquire(name, skipped, { requireHardwareGpu: true, start }).pipe(
            Effect.map(Option.some),
            Effect.catchTag("BackendUnavailable", (e) =>
              Effect.sync(() => {
                skipped.push({ backend: name, reason: e.reason })
                return Option.none()
              }))
          )
          if (Option.isSome(attempt)) return attempt.value
        }
        return yield* new BackendUnavailable({
          backend: "auto",
          reason: skipped.map((s) => `${s.backend}: ${s.reason}`).join("; ")
        })
      })
    )
  }

  /** Why `name` cannot start in this process, or undefined when it can (it is started and released to find out). */
  static unavailable(name: BackendName): Effect.Effect<string | undefined> {
    return Effect.scoped(Layer.build(Compute.layer(name))).pipe(
      Effect.as(undefined),
      Effect.catchTag("BackendUnavailable", (e) => Effect.succeed(e.reason))
    )
  }

  /** The layer for a backend chosen by name (`--backend`), or `auto`. */
  static layer(choice: BackendName | "auto"): Layer.Layer<Compute, BackendUnavailable> {
    switch (choice) {
      case "auto":
        return Compute.auto
      case "webgpu":
        return Compute.webgpu
      case "wasm":
        return Compute.wasm
      case "cpu":
        return Compute.cpu
      case "node-gpu":
        return Compute.nodeGpu
      case "node":
        return Compute.node
    }
  }
}

/** Starts a backend of tfjs by name (backends.ts). */
export type Start = (name: BackendName) => Promise<StartedBackend>

let live: BackendName | undefined

function acquire(
  name: BackendName,
  skipped: ReadonlyArray<Skipped>,
  options: { readonly requireHardwareGpu?: boolean; readonly start?: Start } = {}
): Effect.Effect<Compute["Service"], BackendUnavailable, Scope.Scope> {
  return Effect.acquireRelease(
    Effect.gen(function*() {
      if (live !== undefined) {
        return yield* new BackendUnavailable({
          backend: name,
          reason: `another Compute layer (${live}) is live in this process; tfjs has one global engine`
        })
      }
      const started = yield* Effect.tryPromise({
        try: () => (options.start ?? startBackend)(name),
        catch: (cause) => new BackendUnavailable({ backend: name, reason: firstLine(cause) })
      })
      if (options.requireHardwareGpu && name === "webgpu" && !started.hardware) {
        yield* Effect.sync(() => stopBackend(started))
        return yield* new BackendUnavailable({
          backend: name,
          reason: `only a software adapter (${started.device}); wasm is faster on the same CPU`
        })
      }
      live = name
      return started
    }),
    (started) => Effect.sync(() => stopBackend(started))
  ).pipe(Effect.map((started) => makeService(name, started, skipped)))
}

function stopBackend(started: StartedBackend): void {
  tf.disposeVariables()
  tf.engine().reset()
  started.teardown?.()
  live = undefined
}

function makeService(name: BackendName, started: StartedBackend, skipped: ReadonlyArray<Skipped>): Compute["Service"] {
  const memory = Effect.sync((): MemoryFigures => {
    const m = tf.memory()
    return {
      tensors: m.numTensors,
      bytes: m.numBytes,
      deviceBytes: started.deviceBytes?.(),
      processRss: process.memoryUsage().rss
    }
  })
  const scoped = <A, E, R>(self: Effect.Effect<A, E, R>) =>
    Effect.acquireUseRelease(
      Effect.sync(() => tf.engine().startScope()),
      () => self,
      (_, exit) => Effect.sync(() => tf.engine().endScope((Exit.isSuccess(exit) ? exit.value : undefined) as TensorContainer))
    )
  const read = (t: tf.Tensor) =>
    Effect.tryPromise({
      try: async () => Float32Array.from(await t.data()),
      catch: (cause) => new ComputeError({ backend: name, operation: `read ${t.shape.join("×")}`, cause })
    })
  return Compute.of({
    backend: name,
    device: started.device,
    hardware: started.hardware,
    skipped,
    memory,
    tidy,
    scoped,
    read
  })
}

function firstLine(cause: unknown): string {
  const text = cause instanceof Error ? cause.message : String(cause)
  return text.split("\n").find((line) => line.trim() !== "")?.trim() ?? "unknown error"
}
