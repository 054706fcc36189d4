/** `bench fid`: float64 feature statistics and the Fréchet distance of large feature sets. */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { FeatureStatistics, FrechetDistance, Matrix } from "@tinyfusion/eval"
import { Benchmark, Rng } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"

export const fid = Command.make(
  "fid",
  {
    dim: CheckedFlags.count("dim").pipe(Flag.withDefault(2048), Flag.withDescription("Feature dimension (Inception pool features: 2048)")),
    samples: CheckedFlags.count("samples").pipe(Flag.withDefault(4096), Flag.withDescription("Feature vectors per set")),
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(256), Flag.withDescription("Rows per statistics batch")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(1), Flag.withDescription("Timed Fréchet distances"))
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
