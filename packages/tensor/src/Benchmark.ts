/**
 * Timings of the active backend: a square matmul, any one product, and
 * training steps of the proxy MLP. Each timed step ends with a device read,
 * so asynchronous backends (WebGPU) are measured to completion; warm-up
 * steps absorb kernel compilation.
 */
import { Effect } from "effect"
import { Compute, type ComputeError } from "./Compute.ts"
import * as ParamTree from "./ParamTree.ts"
import * as ProxyMlp from "./ProxyMlp.ts"
import { tf } from "./tf.ts"

export interface Timing {
  /** Median milliseconds of the timed repetitions. */
  readonly ms: number
  /** Median CPU milliseconds (user + system, every thread of the process): on a shared machine, steadier than wall time. */
  readonly cpuMs: number
  readonly repetitions: number
}

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** Times `step` (which must end in a device read) after `warmup` untimed calls. */
export const time = <E, R>(
  step: Effect.Effect<unknown, E, R>,
  options: { readonly warmup: number; readonly repetitions: number }
): Effect.Effect<Timing, E, R> =>
  Effect.gen(function*() {
    for (let i = 0; i < options.warmup; i++) yield* step
    const samples: Array<number> = []
    const cpu: Array<number> = []
    for (let i = 0; i < options.repetitions; i++) {
      const start = performance.now()
      const cpuStart = process.cpuUsage()
      yield* step
      const used = process.cpuUsage(cpuStart)
      samples.push(performance.now() - start)
      cpu.push((used.user + used.system) / 1000)
    }
    return { ms: median(samples), cpuMs: median(cpu), repetitions: options.repetitions }
  })

/** An n×n float32 matmul; returns its timing and GFLOP/s. */
export const matmul = (n: number, options: { readonly warmup: number; readonly repetitions: number }) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const a = tf.randomNormal([n, n], 0, 1, "float32", 1)
    const b = tf.randomNormal([n, n], 0, 1, "float32", 2)
    const timing = yield* time(
      compute.scoped(Effect.gen(function*() {
        yield* compute.read(tf.slice(tf.matMul(a, b), [0, 0], [1, 1]))
      })),
      options
    ).pipe(Effect.ensuring(Effect.sync(() => tf.dispose([a, b]))))
    return { ...timing, gflops: (2 * n ** 3) / (timing.ms * 1e6) }
  })

/** The shapes and transposes of one tf.matMul. */
export interface Product {
  readonly a: ReadonlyArray<number>
  readonly b: ReadonlyArray<number>
  readonly transposeA: boolean
  readonly transposeB: boolean
}

/** Multiply-adds ×2 of a product, batch dims broadcast. */
export const productFlops = (p: Product): number => {
  const [ra, rb] = [p.a.length, p.b.length]
  const [m, k] = p.transposeA ? [p.a[ra - 1]!, p.a[ra - 2]!] : [p.a[ra - 2]!, p.a[ra - 1]!]
  const n = p.transposeB ? p.b[rb - 2]! : p.b[rb - 1]!
  const batch = tf.broadcast_util.assertAndGetBroadcastShape(p.a.slice(0, -2), p.b.slice(0, -2)).reduce((x, d) => x * d, 1)
  return 2 * batch * m * n * k
}

/** One tf.matMul of random operands; returns its timing and GFLOP/s. */
export const product = (p: Product, options: { readonly warmup: number; readonly repetitions: number }) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const a = tf.randomNormal([...p.a], 0, 1, "float32", 1)
    const b = tf.randomNormal([...p.b], 0, 1, "float32", 2)
    const timing = yield* time(
      compute.scoped(Effect.gen(function*() {
        yield* compute.read(tf.slice(tf.reshape(tf.matMul(a, b, p.transposeA, p.transposeB), [-1]), 0, 1))
      })),
      options
    ).pipe(Effect.ensuring(Effect.sync(() => tf.dispose([a, b]))))
    return { ...timing, gflops: productFlops(p) / (timing.ms * 1e6) }
  })

/** Forward + backward + SGD update of the proxy MLP, per step. */
export const proxyTraining = (
  shape: ProxyMlp.Shape,
  options: { readonly warmup: number; readonly repetitions: number }
): Effect.Effect<Timing & { readonly loss: number }, ComputeError, Compute> =>
  Effect.gen(function*() {
    const compute = yield* Compute
    let params = ProxyMlp.init(shape, 0)
    const { x, y } = ProxyMlp.batch(shape, 0)
    let loss = NaN
    const step = Effect.gen(function*() {
      const next = yield* compute.scoped(Effect.gen(function*() {
        const out = ProxyMlp.sgdStep(params, x, y, 1e-3)
        loss = (yield* compute.read(out.loss))[0]!
        return out.params
      }))
      ParamTree.dispose(params)
      params = next
    })
    const timing = yield* time(step, options).pipe(
      Effect.ensuring(Effect.sync(() => (ParamTree.dispose(params), tf.dispose([x, y]))))
    )
    return { ...timing, loss }
  })
