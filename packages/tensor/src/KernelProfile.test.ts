import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute } from "./Compute.ts"
import * as KernelProfile from "./KernelProfile.ts"
import { tf } from "./tf.ts"

describe("KernelProfile", () => {
  it.effect("counts each kernel by phase (forward and backward of a gradient, the rest) and restores the kernels", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const multiply = tf.getKernel(tf.Multiply, "wasm")
      const x = tf.tensor([1, 2, 3])
      const { result, profile } = KernelProfile.record(() =>
        compute.tidy(() => {
          const [g] = tf.grads((v: tf.Tensor) => tf.sum(tf.mul(v, v)))([x])
          return tf.add(g!, 1).dataSync()
        }))
      // d/dx Σ x² = 2x, plus one.
      assert.deepStrictEqual(Array.from(result), [3, 5, 7])
      const calls = (phase: KernelProfile.Phase, kernel: string) =>
        profile.kernels.find((k) => k.phase === phase && k.kernel === kernel)?.calls ?? 0
      assert.strictEqual(calls("forward", tf.Multiply), 1)
      assert.strictEqual(calls("forward", tf.Sum), 1)
      assert.isAbove(calls("backward", tf.Multiply), 0)
      assert.strictEqual(calls("other", tf.Add), 1)
      const total = profile.phases.reduce((s, p) => s + p.calls, 0)
      assert.strictEqual(total, profile.kernels.reduce((s, k) => s + k.calls, 0))
      for (const p of profile.phases) assert.isAtMost(p.kernelMs, p.ms + 1e-6)
      assert.strictEqual(tf.getKernel(tf.Multiply, "wasm"), multiply)
      const twice = KernelProfile.average([profile, profile])
      assert.strictEqual(twice.kernels.length, profile.kernels.length)
      assert.closeTo(twice.ms, profile.ms, 1e-9)
      x.dispose()
    }).pipe(Effect.provide(Compute.wasm)))
})
