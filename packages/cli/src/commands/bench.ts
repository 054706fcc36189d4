/**
 * `tinyfusion bench …` (also `pnpm bench …`): speed figures, printed, never
 * asserted. `compute` times the residual-MLP proxy training step on each
 * backend that initialises here; `store` times writing, verifying and
 * reading a tensor artifact; `fid` times the float64 feature statistics and
 * the Fréchet distance (host CPU only).
 */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import * as os from "node:os"
import { StoreBenchmark } from "@tinyfusion/core"
import { FeatureStatistics, FrechetDistance, Matrix } from "@tinyfusion/eval"
import { Benchmark, backendNames, Compute, Rng } from "@tinyfusion/tensor"
import * as Table from "../Table.ts"

const backendsFlag = Flag.String("backends").pipe(
  Flag.withDescription(`Comma-separated backends to time (default: every one that initialises: ${backendNames.join(",")})`),
  Flag.withDefault(backendNames.join(","))
)

const compute = Command.make(
  "compute",
  {
    layers: Flag.Int("layers").pipe(Flag.withDefault(28), Flag.withDescription("Residual MLP layers")),
    tokens: Flag.Int("tokens").pipe(Flag.withDefault(1024), Flag.withDescription("Tokens per batch (T)")),
    width: Flag.Int("width").pipe(Flag.withDefault(64), Flag.withDescription("Hidden width (D)")),
    repetitions: Flag.Int("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed steps per backend")),
    budget: Flag.Int("budget-s").pipe(Flag.withDefault(60), Flag.withDescription("Seconds per backend; slow backends time fewer steps")),
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const shape = { layers: o.layers, tokens: o.tokens, width: o.width }
      yield* Console.log(`proxy: ${o.layers}-layer residual MLP, T=${o.tokens}, D=${o.width}; forward + backward + SGD, median ms/step`)
      const rows = yield* Effect.forEach(o.backends.split(",").map((b) => b.trim()), (name) =>
        Effect.gen(function*() {
          const c = yield* Compute
          const first = yield* Benchmark.proxyTraining(shape, { warmup: 0, repetitions: 1 })
          const repetitions = Math.max(1, Math.min(o.repetitions, Math.floor((o.budget * 1000) / first.ms) - 1))
          const t = yield* Benchmark.proxyTraining(shape, { warmup: 1, repetitions })
          return [name, c.device, Table.fixed(t.ms, 1), String(t.repetitions)]
        }).pipe(
          Effect.provide(Compute.layer(name as never)),
          Effect.catchTags({
            BackendUnavailable: (e) => Effect.succeed([name, `unavailable: ${e.reason}`, "-", "0"]),
            ComputeError: (e) => Effect.succeed([name, `failed: ${e.message}`, "-", "0"])
          })
        ))
      yield* Console.log(Table.render(["backend", "device", "ms/step", "steps timed"], rows))
    })
).pipe(Command.withDescription("Time the 28-layer residual MLP proxy (fwd + bwd + update) on each backend"))

const fid = Command.make(
  "fid",
  {
    dim: Flag.Int("dim").pipe(Flag.withDefault(2048), Flag.withDescription("Feature dimension (Inception pool features: 2048)")),
    samples: Flag.Int("samples").pipe(Flag.withDefault(4096), Flag.withDescription("Feature vectors per set")),
    batch: Flag.Int("batch").pipe(Flag.withDefault(256), Flag.withDescription("Rows per statistics batch")),
    repetitions: Flag.Int("repetitions").pipe(Flag.withDefault(1), Flag.withDescription("Timed Fréchet distances"))
  },
  (o) =>
    Effect.gen(function*() {
      // Correlated features: x = z·W/√k for a fixed random W, so the covariances are full and not diagonal.
      const k = 64
      const w = Rng.normal(Rng.stream(0, "bench-fid/mixing"), 0, k * o.dim)
      const set = (seed: number) => {
        const z = Rng.normal(Rng.stream(seed, "bench-fid/latent"), 0, o.samples * k)
        const noise = Rng.normal(Rng.stream(seed, "bench-fid/noise"), 0, o.samples * o.dim)
        const x = new Float32Array(o.samples * o.dim)
        for (let r = 0; r < o.samples; r++) {
          for (let t = 0; t < k; t++) {
            const zt = z[r * k + t]! / Math.sqrt(k)
            for (let j = 0; j < o.dim; j++) x[r * o.dim + j] = x[r * o.dim + j]! + zt * w[t * o.dim + j]!
          }
          for (let j = 0; j < o.dim; j++) x[r * o.dim + j] = x[r * o.dim + j]! + 0.3 * noise[r * o.dim + j]! + seed * 0.01
        }
        return Matrix.make(o.samples, o.dim, x)
      }
      const features = [set(1), set(2)]
      // Each timed repetition summarises the next set.
      const statistics: Array<FeatureStatistics.FeatureStatistics> = []
      const statsTiming = yield* Benchmark.time(
        Effect.gen(function*() {
          const acc = FeatureStatistics.accumulator(o.dim)
          const m = features[statistics.length]!
          for (let r = 0; r < m.rows; r += o.batch) yield* acc.add(Matrix.slice(m, r, Math.min(m.rows, r + o.batch)))
          statistics.push(yield* acc.result)
        }),
        { warmup: 0, repetitions: 2 }
      )
      let value = NaN
      const fidTiming = yield* Benchmark.time(
        FrechetDistance.compute(statistics[0]!, statistics[1]!).pipe(Effect.map((v) => (value = v))),
        { warmup: 0, repetitions: o.repetitions }
      )
      const rowsPerSecond = (o.samples / statsTiming.ms) * 1000
      yield* Console.log(`features: ${o.samples} × ${o.dim}, float64 statistics in batches of ${o.batch}; host CPU, single thread`)
      yield* Console.log(Table.render(
        ["step", "median ms", "figure"],
        [
          ["statistics of one set", Table.fixed(statsTiming.ms, 0), `${Table.fixed(rowsPerSecond, 0)} rows/s (50K rows: ${Table.fixed(50_000 / rowsPerSecond, 0)} s)`],
          ["Fréchet distance", Table.fixed(fidTiming.ms, 0), `FID ${Table.fixed(value, 4)}`]
        ]
      ))
    })
).pipe(Command.withDescription("Time float64 feature statistics and the Fréchet distance (default: 2048-dimensional features)"))

const store = Command.make(
  "store",
  {
    mib: Flag.Int("mib").pipe(Flag.withDefault(256), Flag.withDescription("Artifact size in MiB (float32 tensors)")),
    dir: Flag.String("dir").pipe(Flag.withDefault(os.tmpdir()), Flag.withDescription("Directory for the temporary store (its disk is measured)"))
  },
  (o) =>
    Effect.gen(function*() {
      const figures = yield* Effect.scoped(StoreBenchmark.measure(o.mib, o.dir))
      yield* Console.log(`one ${o.mib} MiB tensor artifact in a store under ${o.dir}`)
      yield* Console.log(Table.render(
        ["operation", "ms", "MiB/s"],
        figures.map((f) => [f.operation, Table.fixed(f.ms, 0), Table.fixed(f.mibPerSecond, 0)])
      ))
    })
).pipe(Command.withDescription("Time committing, verifying and reading back a tensor artifact"))

export const bench = Command.make("bench").pipe(
  Command.withDescription("Speed benchmarks (figures only; nothing is asserted)"),
  Command.withSubcommands([compute, store, fid])
)
