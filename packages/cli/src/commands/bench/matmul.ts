/**
 * `bench matmul`: the products of a training step on the wasm backend, timed
 * with tfjs's kernels and with the accelerated ones (WasmMatMul).
 */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { Benchmark, Compute, WasmMatMul } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"

const product = (name: string, a: Array<number>, b: Array<number>, transposeA: boolean, transposeB: boolean) => ({
  name,
  product: { a, b, transposeA, transposeB } satisfies Benchmark.Product
})

/** The products of a proxy step (T=1024, D=64) and of mini-teacher and DiT-S/2 blocks. */
const products = [
  product("proxy x·Wᵀ (forward)", [1024, 64], [64, 64], false, true),
  product("proxy dy·W (∂x)", [1024, 64], [64, 64], false, false),
  product("proxy dyᵀ·x (∂W)", [1024, 64], [1024, 64], true, false),
  product("mini qkv x·Wᵀ, 32×16 tokens", [512, 128], [384, 128], false, true),
  product("mini fc2 dyᵀ·h (∂W)", [512, 128], [512, 512], true, false),
  product("mini attention q·kᵀ", [32, 4, 16, 32], [32, 4, 16, 32], false, true),
  product("DiT-S/2 attention q·kᵀ, batch 2", [2, 6, 256, 64], [2, 6, 256, 64], false, true),
  product("DiT-S/2 attention weights·v", [2, 6, 256, 256], [2, 6, 256, 64], false, false),
  product("batch · matrix, [8,256,384]·Wᵀ", [8, 256, 384], [384, 384], false, true),
  product("square 256 ᵀ·ᵀ", [256, 256], [256, 256], true, true)
]

export const matmul = Command.make(
  "matmul",
  {
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(7), Flag.withDescription("Timed products per kernel"))
  },
  (o) =>
    Effect.gen(function*() {
      const c = yield* Compute
      yield* Console.log(`${c.device}: median ms per tf.matMul (a·b with the transposes shown), tfjs's kernels vs the accelerated ones`)
      const options = { warmup: 2, repetitions: o.repetitions }
      const rows = yield* Effect.forEach(products, ({ name, product: p }) =>
        Effect.gen(function*() {
          WasmMatMul.uninstall()
          const reference = yield* Benchmark.product(p, options)
          WasmMatMul.install()
          const fast = yield* Benchmark.product(p, options)
          const shape = (s: ReadonlyArray<number>, t: boolean) => `[${s.join(",")}]${t ? "ᵀ" : ""}`
          return [
            name,
            `${shape(p.a, p.transposeA)}·${shape(p.b, p.transposeB)}`,
            Table.fixed(reference.ms, 2),
            Table.fixed(fast.ms, 2),
            Table.fixed(fast.gflops, 1),
            `${Table.fixed(reference.ms / fast.ms, 1)}×`
          ]
        }).pipe(Effect.ensuring(Effect.sync(WasmMatMul.install))))
      yield* Console.log(Table.render(["product", "shapes", "tfjs ms", "accelerated ms", "GFLOP/s", "speed-up"], rows))
    }).pipe(
      Effect.provide(Compute.wasm),
      Effect.catchTag("BackendUnavailable", (e) => Console.log(`wasm is unavailable: ${e.reason}`))
    )
).pipe(Command.withDescription("Time the products of a training step on wasm: tfjs's kernels vs the accelerated ones"))
