import { assert, describe, it } from "@effect/vitest"
import * as Interval from "./Interval.ts"

describe("Interval", () => {
  it("normal and t quantiles match the tables (R's qnorm, qt)", () => {
    assert.closeTo(Interval.normalQuantile(0.975), 1.959963984540054, 1e-14)
    assert.closeTo(Interval.normalQuantile(0.5), 0, 1e-15)
    assert.closeTo(Interval.normalQuantile(1e-10), -6.361340902404056, 1e-12)
    assert.closeTo(Interval.normalQuantile(0.99375), 2.497705474412374, 1e-12)
    // qt(0.975, df) for df = 1, 2, 10, 30, and a Welch–Satterthwaite df of 3.5
    for (const [df, q] of [[1, 12.70620473617471], [2, 4.302652729749464], [10, 2.228138851986274], [30, 2.042272456301238], [3.5, 2.9400886379827282]] as const) {
      assert.closeTo(Interval.studentTQuantile(0.975, df), q, 1e-9, `df ${df}`)
    }
    assert.closeTo(Interval.studentTQuantile(0.025, 2), -4.302652729749464, 1e-9)
    assert.closeTo(Interval.studentTQuantile(0.975, Infinity), 1.959963984540054, 1e-14)
    assert.closeTo(Interval.studentTQuantile(0.975, 1e6), 1.959966, 1e-5)
    // t with 1 df is Cauchy: P(T ≤ 1) = 3/4.
    assert.closeTo(Interval.studentTCdf(1, 1), 0.75, 1e-14)
  })

  it("symmetric intervals: value ± t·se; zero se is exact", () => {
    const i = Interval.symmetric(10, 2, 2)
    assert.closeTo(i.lo, 10 - 2 * 4.302652729749464, 1e-8)
    assert.closeTo(i.hi, 10 + 2 * 4.302652729749464, 1e-8)
    assert.closeTo(Interval.halfWidth(i), 2 * 4.302652729749464, 1e-8)
    assert.deepStrictEqual(Interval.symmetric(3, 0, 5), Interval.exact(3))
  })

  it("the median's order-statistic interval: coverage from Binomial(n, 1/2)", () => {
    // n = 6: k = 1 covers 1 − 2/64 = 96.9%; k = 2 would cover 1 − 14/64 = 78%.
    const six = Interval.medianInterval([5, 1, 4, 2, 6, 3])
    assert.deepStrictEqual([six.value, six.lo, six.hi], [3.5, 1, 6])
    assert.closeTo(six.level, 62 / 64, 1e-15)
    // n = 9: k = 2 covers 1 − 2·10/512 = 96.1%; k = 3 only 82%.
    const nine = Interval.medianInterval([9, 8, 7, 6, 5, 4, 3, 2, 1])
    assert.deepStrictEqual([nine.value, nine.lo, nine.hi], [5, 2, 8])
    assert.closeTo(nine.level, 1 - 20 / 512, 1e-15)
    // Five values cannot reach 95%: the range, at 1 − 2/32.
    const five = Interval.medianInterval([1, 2, 3, 4, 5])
    assert.deepStrictEqual([five.lo, five.hi], [1, 5])
    assert.closeTo(five.level, 30 / 32, 1e-15)
    assert.strictEqual(Interval.medianInterval([7]).level, 0)
  })

  it("Wilson's interval of a proportion (hand-computed)", () => {
    // 90 of 100, z = 1.95996: centre (0.9 + z²/200)/(1 + z²/100), half-width as in Wilson (1927).
    const w = Interval.wilson(90, 100)
    assert.closeTo(w.lo, 0.8256343, 1e-6)
    assert.closeTo(w.hi, 0.9447709, 1e-6)
    assert.strictEqual(w.value, 0.9)
  })
})
