import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute, Rng, tf, WebGpuFixture } from "@tinyfusion/tensor"
import * as Nn from "./Nn.ts"

const s = Rng.stream(0, "nn-test")
const normal = (step: number, shape: ReadonlyArray<number>) => Rng.normalTensor(s, step, shape)
const values = (t: tf.Tensor) => Array.from(t.dataSync())
const maxDiff = (a: tf.Tensor, b: tf.Tensor) => Math.max(...values(tf.abs(tf.sub(a, b))))

describe("Nn", () => {
  it.effect("conv2d: forward and both gradients equal tfjs's own conv2d and its kernels (cpu backend)", () =>
    Effect.gen(function*() {
      for (const k of [1, 3]) {
        const x = normal(1, [2, 5, 4, 3])
        const weight = normal(2, [6, 3, k, k])
        const bias = normal(3, [6])
        const probe = normal(4, [2, 5, 4, 6])
        const ours = (xx: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(Nn.conv2d(xx, { weight: w, bias }), probe))
        const reference = (xx: tf.Tensor, w: tf.Tensor) =>
          tf.sum(tf.mul(tf.add(tf.conv2d(xx as tf.Tensor4D, tf.transpose(w, [2, 3, 1, 0]) as tf.Tensor4D, 1, "same"), bias), probe))
        const [gx, gw] = tf.grads(ours)([x, weight])
        const [rx, rw] = tf.grads(reference)([x, weight])
        assert.isBelow(Math.abs(values(ours(x, weight))[0]! - values(reference(x, weight))[0]!), 1e-3)
        assert.isBelow(maxDiff(gx!, rx!), 1e-4)
        assert.isBelow(maxDiff(gw!, rw!), 1e-4)
      }
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("down and up are PyTorch's Conv2d(k=2, s=2) and ConvTranspose2d(k=2, s=2), written out as loops", () =>
    Effect.gen(function*() {
      const [n, h, w, ci, co] = [2, 4, 6, 3, 5]
      const x = normal(5, [n, h, w, ci])
      const down = { weight: normal(6, [co, ci, 2, 2]), bias: normal(7, [co]) }
      const up = { weight: normal(8, [ci, co, 2, 2]), bias: normal(9, [co]) }
      const xv = values(x)
      const at = (a: Array<number>, shape: ReadonlyArray<number>, idx: ReadonlyArray<number>) =>
        a[idx.reduce((flat, i, d) => flat * shape[d]! + i, 0)]!
      const dw = values(down.weight)
      const db = values(down.bias)
      const got = values(Nn.down(x as tf.Tensor4D, down))
      for (const [b, y, xx, o] of [[0, 0, 0, 0], [1, 1, 2, 4], [0, 1, 1, 2]] as const) {
        let sum = db[o]!
        for (let i = 0; i < ci; i++) for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) {
          sum += at(xv, [n, h, w, ci], [b, 2 * y + dy, 2 * xx + dx, i]) * at(dw, [co, ci, 2, 2], [o, i, dy, dx])
        }
        assert.closeTo(at(got, [n, h / 2, w / 2, co], [b, y, xx, o]), sum, 1e-4)
      }
      const uw = values(up.weight)
      const ub = values(up.bias)
      const upOut = values(Nn.up(x as tf.Tensor4D, up))
      for (const [b, y, xx, o] of [[0, 0, 0, 0], [1, 7, 11, 4], [0, 3, 6, 2], [1, 2, 9, 1]] as const) {
        let sum = ub[o]!
        for (let i = 0; i < ci; i++) {
          sum += at(xv, [n, h, w, ci], [b, y >> 1, xx >> 1, i]) * at(uw, [ci, co, 2, 2], [i, o, y & 1, xx & 1])
        }
        assert.closeTo(at(upOut, [n, 2 * h, 2 * w, co], [b, y, xx, o]), sum, 1e-4)
      }
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("conv2d trains on wasm (no native kernel gradient there) and matches cpu", () =>
    Effect.gen(function*() {
      const run = () => {
        const x = normal(10, [2, 4, 4, 2])
        const weight = normal(11, [3, 2, 3, 3])
        const bias = normal(12, [3])
        return values(tf.grad((w: tf.Tensor) => tf.sum(tf.square(Nn.conv2d(x, { weight: w, bias }))))(weight))
      }
      const onWasm = yield* Effect.sync(run).pipe(Effect.provide(Compute.wasm))
      const onCpu = yield* Effect.sync(run).pipe(Effect.provide(Compute.cpu))
      onWasm.forEach((v, i) => assert.closeTo(v, onCpu[i]!, 1e-3 * Math.max(1, Math.abs(onCpu[i]!))))
    }))

  it.effect("init: PyTorch's ±1/√fan_in uniform, stable per key", () =>
    Effect.gen(function*() {
      const a = Nn.init(Rng.stream(1, "init"), "layer", [8, 4, 3, 3], 8)
      const b = Nn.init(Rng.stream(1, "init"), "layer", [8, 4, 3, 3], 8)
      const bound = 1 / Math.sqrt(36)
      const w = values(a.weight)
      assert.isTrue(w.every((v) => Math.abs(v) <= bound))
      assert.isAbove(Math.max(...w), 0.8 * bound)
      assert.deepStrictEqual(w, values(b.weight))
      assert.notDeepEqual(values(a.bias), values(Nn.init(Rng.stream(1, "init"), "other", [8, 4, 3, 3], 8).bias))
    }).pipe(Effect.provide(Compute.cpu)))

  describe("on webgpu", () => {
    beforeEach(WebGpuFixture.required)

    it.effect("conv2d, down and up train there: values and gradients of input, weight and bias match cpu", () =>
      Effect.gen(function*() {
        const run = Effect.gen(function*() {
          const compute = yield* Compute
          return yield* compute.scoped(Effect.gen(function*() {
            const x = normal(20, [2, 4, 6, 3])
            const layers = {
              conv: { weight: normal(21, [5, 3, 3, 3]), bias: normal(22, [5]) },
              down: { weight: normal(23, [4, 5, 2, 2]), bias: normal(24, [4]) },
              up: { weight: normal(25, [4, 3, 2, 2]), bias: normal(26, [3]) }
            }
            const loss = (xx: tf.Tensor, ...w: Array<tf.Tensor>) =>
              tf.sum(tf.square(Nn.up(Nn.down(Nn.conv2d(xx, { weight: w[0]!, bias: w[1]! }), { weight: w[2]!, bias: w[3]! }), { weight: w[4]!, bias: w[5]! })))
            const params = [layers.conv.weight, layers.conv.bias, layers.down.weight, layers.down.bias, layers.up.weight, layers.up.bias]
            const { value, grads } = tf.valueAndGrads(loss)([x, ...params])
            return [yield* compute.read(value), ...(yield* Effect.forEach(grads, compute.read))]
          }))
        })
        const gpu = yield* run.pipe(Effect.provide(Compute.webgpu))
        const cpu = yield* run.pipe(Effect.provide(Compute.cpu))
        cpu.forEach((expected, i) => expected.forEach((v, j) => assert.closeTo(gpu[i]![j]!, v, 1e-4 * Math.max(1, Math.abs(v)), `tensor ${i}[${j}]`)))
      }), 60_000)
  })
})
