import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as AdamW from "./AdamW.ts"
import { Compute } from "./Compute.ts"
import * as Ema from "./Ema.ts"
import * as Gradients from "./Gradients.ts"
import * as Schedules from "./Schedules.ts"
import { tf } from "./tf.ts"

const values = (t: tf.Tensor) => Array.from(t.dataSync())

// torch.optim.AdamW transcribed in float64, one scalar parameter.
const adamwReference = (p0: number, grads: ReadonlyArray<number>, lr: number, wd: number) => {
  let [p, m, v] = [p0, 0, 0]
  grads.forEach((g, i) => {
    const t = i + 1
    p *= 1 - lr * wd
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    p -= (lr / (1 - 0.9 ** t)) * (m / (Math.sqrt(v) / Math.sqrt(1 - 0.999 ** t) + 1e-8))
  })
  return p
}

describe("optimisers", () => {
  it.effect("AdamW: hand-computed first step and the torch recurrence over five", () =>
    Effect.gen(function*() {
      const config: AdamW.Config = {
        ...AdamW.defaults,
        groups: [
          { name: "gates", includes: (k) => k.startsWith("gate"), lr: 1e-1, weightDecay: 0.01 },
          { name: "rest", includes: () => true, lr: 1e-2, weightDecay: 0 }
        ]
      }
      let params = { gate: tf.tensor([1]), w: tf.tensor([1]) } as Record<string, tf.Tensor>
      let state = AdamW.init(params)
      const gradSeq = [0.5, -1, 0.25, 2, -0.125]
      for (const [i, g] of gradSeq.entries()) {
        const next = AdamW.update(config, state, params, { gate: tf.tensor([g]), w: tf.tensor([g]) })
        params = next.params as Record<string, tf.Tensor>
        state = next.state
        // Step 1 by hand: p = 1·(1 − 0.1·0.01) − 0.1·(0.05/0.1)/(√0.00025/√0.001 + 1e-8) = 0.999 − 0.1 = 0.899
        if (i === 0) assert.closeTo(values(params["gate"]!)[0]!, 0.899, 1e-6)
      }
      assert.strictEqual(state.step, 5)
      assert.closeTo(values(params["gate"]!)[0]!, adamwReference(1, gradSeq, 1e-1, 0.01), 1e-6)
      assert.closeTo(values(params["w"]!)[0]!, adamwReference(1, gradSeq, 1e-2, 0), 1e-6)
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("EMA, clipping, finiteness", () =>
    Effect.gen(function*() {
      assert.closeTo(values(Ema.update({ a: tf.tensor([1]) }, { a: tf.tensor([3]) }, 0.9)["a" as never])[0]!, 1.2, 1e-6)
      const norm = Gradients.globalNorm({ a: tf.tensor([3]), b: [tf.tensor([4])] })
      assert.closeTo(values(norm)[0]!, 5, 1e-6)
      assert.closeTo(values(Gradients.clipScale(norm, 1))[0]!, 1 / (5 + 1e-6), 1e-6)
      assert.strictEqual(values(Gradients.clipScale(Gradients.globalNorm({ a: tf.tensor([0.3, 0.4]) }), 1))[0]!, 1)
      // AdamW with a gradient scale is AdamW on the scaled gradients: with g = 4 scaled by 1/4, step 1 moves p by lr.
      const scaled = AdamW.update(AdamW.single(0.1), AdamW.init({ p: tf.tensor([1]) }), { p: tf.tensor([1]) }, { p: tf.tensor([4]) }, { gradScale: tf.scalar(0.25) })
      const plain = AdamW.update(AdamW.single(0.1), AdamW.init({ p: tf.tensor([1]) }), { p: tf.tensor([1]) }, { p: tf.tensor([1]) })
      assert.closeTo(values(scaled.params["p"]!)[0]!, 0.9, 1e-6)
      assert.deepStrictEqual(values(scaled.state.m["p" as never]), values(plain.state.m["p" as never]))
      assert.deepStrictEqual(values(scaled.state.v["p" as never]), values(plain.state.v["p" as never]))
      assert.isTrue(yield* Effect.promise(() => Gradients.allFinite(tf.tensor([1, 2]))))
      assert.isFalse(yield* Effect.promise(() => Gradients.allFinite(tf.tensor([1, NaN]))))
      assert.isFalse(yield* Effect.promise(() => Gradients.allFinite(tf.tensor([Infinity]))))
    }).pipe(Effect.provide(Compute.cpu)))

  it.effect("valueAndGrad differentiates a tree: d/dw Σ(w·x)² = 2x²w", () =>
    Effect.gen(function*() {
      const x = tf.tensor([1, 2, 3])
      const { value, grads } = Gradients.valueAndGrad(
        (p) => tf.sum(tf.square(tf.mul((p as { w: tf.Tensor }).w, x))) as tf.Scalar,
        { w: tf.tensor([1, -1, 0.5]) }
      )
      assert.closeTo(values(value)[0]!, 1 + 4 + 2.25, 1e-6)
      assert.deepStrictEqual(values((grads as { w: tf.Tensor }).w), [2, -8, 9])
      // Through stopGradient and a detached comparison nothing flows: d/dw (w·sg(w) + w·[w < 0]) = sg(w) + [w < 0].
      const w = tf.tensor([3, -2])
      const g = tf.grad((v: tf.Tensor) =>
        tf.sum(tf.add(tf.mul(v, Gradients.stopGradient(v)), tf.mul(v, Gradients.detached((u) => tf.cast(tf.less(u, 0), "float32"))(v))))
      )(w)
      assert.deepStrictEqual(values(g), [3, -1])
    }).pipe(Effect.provide(Compute.cpu)))

  it("schedules", () => {
    const tau = Schedules.linear({ from: 4, to: 0.1, steps: 100 })
    assert.strictEqual(tau(0), 4)
    assert.closeTo(tau(50), 2.05, 1e-12)
    assert.closeTo(tau(100), 0.1, 1e-12)
    assert.closeTo(tau(500), 0.1, 1e-12)
    const lr = Schedules.cosine({ from: 2e-4, to: 1e-4, steps: 100 })
    assert.closeTo(lr(0), 2e-4, 1e-18)
    assert.closeTo(lr(50), 1.5e-4, 1e-18)
    assert.closeTo(lr(25), 1e-4 + 1e-4 * (1 + Math.SQRT1_2) / 2, 1e-18)
    assert.closeTo(lr(100), 1e-4, 1e-18)
    // MAE/MAR's lr_sched: lr·step/warmup, then the schedule over the steps left.
    const warm = Schedules.warmup(4, Schedules.cosine({ from: 1, to: 0, steps: 6 }))
    assert.deepStrictEqual([0, 1, 2, 3, 4].map(warm), [0, 0.25, 0.5, 0.75, 1])
    assert.closeTo(warm(7), 0.5, 1e-12)
    assert.closeTo(warm(10), 0, 1e-12)
    const flat = Schedules.warmup(1250, Schedules.constant(1e-4))
    assert.deepStrictEqual([0, 125, 625, 1250, 4999].map(flat), [0, 1e-5, 5e-5, 1e-4, 1e-4])
    assert.strictEqual(Schedules.constant(3)(99), 3)
  })

  it.effect("AdamW with timm's decay groups and betas (0.9, 0.95): one step by hand", () =>
    Effect.gen(function*() {
      const exempt = AdamW.undecayed(["head"])
      assert.deepStrictEqual(
        [["w", [2, 2]], ["w.bias", [2]], ["norm.weight", [2]], ["emb", [1, 1, 2]], ["head.w", [2, 2]], ["odd.bias", [2, 2]]].map(([k, s]) =>
          exempt(k as string, s as Array<number>)
        ),
        [false, true, true, false, true, true]
      )
      const config: AdamW.Config = { ...AdamW.defaults, beta1: 0.9, beta2: 0.95, groups: AdamW.decoupled(0.1, 0.5, exempt) }
      assert.deepStrictEqual(
        [["w", [1, 1]], ["b", [1]], ["head.w", [1, 1]]].map(([k, s]) => AdamW.groupOf(config, k as string, s as Array<number>).name),
        ["decay", "no-decay", "no-decay"]
      )
      const params = { w: tf.tensor([[2]]), b: tf.tensor([2]), head: { w: tf.tensor([[2]]) } }
      const grads = { w: tf.tensor([[3]]), b: tf.tensor([3]), head: { w: tf.tensor([[3]]) } }
      // Two steps at lr scale 0.5 (lr 0.05), gradient 3 then -1:
      // step 1: m̂ = 3, v̂ = 9, update 0.05·3/(3 + 1e-8); decay 1 − 0.05·0.5 = 0.975 on w only.
      const one = AdamW.update(config, AdamW.init(params), params, grads, { lrScale: 0.5 })
      const step1 = 0.05 * 3 / (3 + 1e-8)
      assert.closeTo(values(one.params.w)[0]!, 2 * 0.975 - step1, 1e-6)
      assert.closeTo(values(one.params.b)[0]!, 2 - step1, 1e-6)
      assert.closeTo(values(one.params.head.w)[0]!, 2 - step1, 1e-6)
      // step 2: m = 0.9·0.3 + 0.1·(−1) = 0.17, v = 0.95·0.45 + 0.05·1 = 0.4775; m̂ = 0.17/0.19, v̂ = 0.4775/0.0975.
      const minus = { w: tf.tensor([[-1]]), b: tf.tensor([-1]), head: { w: tf.tensor([[-1]]) } }
      const two = AdamW.update(config, one.state, one.params, minus, { lrScale: 0.5 })
      const step2 = 0.05 * (0.17 / 0.19) / (Math.sqrt(0.4775 / 0.0975) + 1e-8)
      assert.closeTo(values(two.params.w)[0]!, (2 * 0.975 - step1) * 0.975 - step2, 1e-6)
      assert.closeTo(values(two.params.b)[0]!, 2 - step1 - step2, 1e-6)
    }).pipe(Effect.provide(Compute.cpu)))
})
