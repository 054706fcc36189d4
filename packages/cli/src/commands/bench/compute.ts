/** `bench compute`: the residual-MLP proxy training step on each backend that initialises here. */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { BackendUnavailable, Benchmark, backendNames, Compute, ComputeError, FusedKernels, NativeGemm, WasmMatMul } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"

export const backendsFlag = Flag.String("backends").pipe(
  Flag.withDescription(`Comma-separated backends to time (default: every one that initialises: ${backendNames.join(",")})`),
  Flag.withDefault(backendNames.join(","))
)

/**
 * Runs `body` once per backend of a --backends list, each on its own Compute
 * layer, in turn; a backend that does not start, or fails, adds a row naming
 * why and the rest still run.
 */
export const eachBackend = <E, R>(
  backends: string,
  rows: Array<Array<string>>,
  body: (name: string) => Effect.Effect<void, E | BackendUnavailable | ComputeError, R>
) =>
  Effect.forEach(backends.split(",").map((b) => b.trim()), (name) =>
    body(name).pipe(
      Effect.provide(Compute.layer(name as never)),
      Effect.catchIf(
        (e): e is BackendUnavailable | ComputeError => e instanceof BackendUnavailable || e instanceof ComputeError,
        (e) => Effect.sync(() => void rows.push([name, e instanceof BackendUnavailable ? `unavailable: ${e.reason}` : `failed: ${e.message}`]))
      )
    ), { discard: true })

/** Runs `self` with a kernel setting turned away from its default when `away`, turning it back after. */
const turnedAway = <A, E, R>(away: boolean, turn: () => void, back: () => void, self: Effect.Effect<A, E, R>) =>
  away ? Effect.acquireUseRelease(Effect.sync(turn), () => self, () => Effect.sync(back)) : self

export const matmulFlag = Flag.Literals("matmul", ["ours", "tfjs"]).pipe(
  Flag.withDescription("wasm: our matmul kernels (WasmMatMul) or tfjs's own, for before/after figures"),
  Flag.withDefault("ours" as const)
)

/** Runs `self` with tfjs's own wasm matmul kernels when asked, restoring ours after. */
export const withMatMul = <A, E, R>(choice: "ours" | "tfjs", self: Effect.Effect<A, E, R>) =>
  turnedAway(choice === "tfjs", WasmMatMul.uninstall, WasmMatMul.install, self)

export const fusedFlag = Flag.Literals("fused", ["on", "off"]).pipe(
  Flag.withDescription("wasm: the fused DiT kernels (FusedKernels) or the composed tfjs ops they replace, for before/after figures"),
  Flag.withDefault("on" as const)
)

/** Runs `self` with the fused kernels removed when asked (the ops compose), restoring them after. */
export const withFused = <A, E, R>(choice: "on" | "off", self: Effect.Effect<A, E, R>) =>
  turnedAway(choice === "off", FusedKernels.uninstall, FusedKernels.install, self)

export const nativeGemmFlag = Flag.Literals("native-gemm", ["on", "off"]).pipe(
  Flag.withDescription("wasm: matrix products in the native AVX2 kernel where it is built (NativeGemm) or in the wasm kernel, for before/after figures (the same bits)"),
  Flag.withDefault("on" as const)
)

/** Runs `self` with the native matrix product off when asked, turning it back on after. */
export const withNativeGemm = <A, E, R>(choice: "on" | "off", self: Effect.Effect<A, E, R>) =>
  turnedAway(choice === "off", () => NativeGemm.use(false), () => NativeGemm.use(true), self)

/** What a device line adds for the kernel settings turned away from their defaults: " (…; …)", or nothing. */
export const kernelNote = (o: { readonly matmul?: "ours" | "tfjs"; readonly fused: "on" | "off"; readonly nativeGemm: "on" | "off" }): string => {
  const notes = [
    o.matmul === "tfjs" ? "tfjs's matmul kernels" : "",
    o.fused === "off" ? "composed ops, no fused kernels" : "",
    o.nativeGemm === "off" ? "native GEMM off" : ""
  ].filter((note) => note !== "")
  return notes.length > 0 ? ` (${notes.join("; ")})` : ""
}

export const compute = Command.make(
  "compute",
  {
    layers: CheckedFlags.count("layers").pipe(Flag.withDefault(28), Flag.withDescription("Residual MLP layers")),
    tokens: CheckedFlags.count("tokens").pipe(Flag.withDefault(1024), Flag.withDescription("Tokens per batch (T)")),
    width: CheckedFlags.count("width").pipe(Flag.withDefault(64), Flag.withDescription("Hidden width (D)")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed steps per backend")),
    budget: CheckedFlags.count("budget-s").pipe(Flag.withDefault(60), Flag.withDescription("Seconds per backend; slow backends time fewer steps")),
    matmul: matmulFlag,
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const shape = { layers: o.layers, tokens: o.tokens, width: o.width }
      yield* Console.log(
        `proxy: ${o.layers}-layer residual MLP, T=${o.tokens}, D=${o.width}; forward + backward + SGD, median ms/step; ${o.matmul} matmul kernels on wasm`
      )
      const rows = yield* Effect.forEach(o.backends.split(",").map((b) => b.trim()), (name) =>
        withMatMul(o.matmul, Effect.gen(function*() {
          const c = yield* Compute
          const first = yield* Benchmark.proxyTraining(shape, { warmup: 0, repetitions: 1 })
          const repetitions = Math.max(1, Math.min(o.repetitions, Math.floor((o.budget * 1000) / first.ms) - 1))
          const t = yield* Benchmark.proxyTraining(shape, { warmup: 1, repetitions })
          return [name, c.device, Table.fixed(t.ms, 1), String(t.repetitions)]
        })).pipe(
          Effect.provide(Compute.layer(name as never)),
          Effect.catchTags({
            BackendUnavailable: (e) => Effect.succeed([name, `unavailable: ${e.reason}`, "-", "0"]),
            ComputeError: (e) => Effect.succeed([name, `failed: ${e.message}`, "-", "0"])
          })
        ))
      yield* Console.log(Table.render(["backend", "device", "ms/step", "steps timed"], rows))
    })
).pipe(Command.withDescription("Time the 28-layer residual MLP proxy (fwd + bwd + update) on each backend"))

