/**
 * Confidence intervals and the distributions they need: the normal and
 * Student t quantiles (t at any real degrees of freedom, for
 * Welch–Satterthwaite), the distribution-free interval of a median from order
 * statistics, and Wilson's interval of a proportion.
 */

export interface Interval {
  readonly value: number
  readonly lo: number
  readonly hi: number
  /** The confidence the interval has (order statistics reach only a few discrete levels). */
  readonly level: number
}

/** A point known exactly: an interval of zero width. */
export const exact = (value: number): Interval => ({ value, lo: value, hi: value, level: 1 })

export const halfWidth = (i: Interval): number => (i.hi - i.lo) / 2

/** Standard normal quantile (Wichura's AS 241, relative error below 1e-16). */
export const normalQuantile = (p: number): number => {
  if (!(p > 0 && p < 1)) return p === 0 ? -Infinity : p === 1 ? Infinity : Number.NaN
  const q = p - 0.5
  if (Math.abs(q) <= 0.425) {
    const r = 0.180625 - q * q
    return (
      (q *
        (((((((r * 2509.0809287301226727 + 33430.575583588128105) * r + 67265.770927008700853) * r + 45921.953931549871457) * r +
          13731.693765509461125) * r + 1971.5909503065514427) * r + 133.14166789178437745) * r + 3.387132872796366608)) /
      (((((((r * 5226.495278852545925 + 28729.085735721942674) * r + 39307.89580009271061) * r + 21213.794301586595867) * r +
        5394.1960214247511077) * r + 687.1870074920579083) * r + 42.313330701600911252) * r + 1)
    )
  }
  let r = Math.sqrt(-Math.log(q < 0 ? p : 1 - p))
  let x: number
  if (r <= 5) {
    r -= 1.6
    x = (((((((r * 7.7454501427834140764e-4 + 0.0227238449892691845833) * r + 0.24178072517745061177) * r + 1.27045825245236838258) * r +
      3.64784832476320460504) * r + 5.7694972214606914055) * r + 4.6303378461565452959) * r + 1.42343711074968357734) /
      (((((((r * 1.05075007164441684324e-9 + 5.475938084995344946e-4) * r + 0.0151986665636164571966) * r + 0.14810397642748007459) * r +
        0.68976733498510000455) * r + 1.6763848301838038494) * r + 2.05319162663775882187) * r + 1)
  } else {
    r -= 5
    x = (((((((r * 2.01033439929228813265e-7 + 2.71155556874348757815e-5) * r + 0.0012426609473880784386) * r + 0.026532189526576123093) * r +
      0.29656057182850489123) * r + 1.7848265399172913358) * r + 5.4637849111641143699) * r + 6.6579046435011037772) /
      (((((((r * 2.04426310338993978564e-15 + 1.4215117583164458887e-7) * r + 1.8463183175100546818e-5) * r + 7.868691311456132591e-4) * r +
        0.0148753612908506148525) * r + 0.13692988092273580531) * r + 0.59983220655588793769) * r + 1)
  }
  return q < 0 ? -x : x
}

const logGamma = (x: number): number => {
  // Lanczos (g = 7, n = 9): 15 significant digits for x > 0.
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
    -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7
  ]
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x)
  const z = x - 1
  let a = c[0]!
  const t = z + 7.5
  for (let i = 1; i < 9; i++) a += c[i]! / (z + i)
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a)
}

/** The continued fraction of the incomplete beta function (modified Lentz). */
const betaFraction = (a: number, b: number, x: number): number => {
  const tiny = 1e-300
  let c = 1
  let d = 1 - ((a + b) * x) / (a + 1)
  d = 1 / (Math.abs(d) < tiny ? tiny : d)
  let h = d
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m
    for (const num of [(m * (b - m) * x) / ((a + m2 - 1) * (a + m2)), (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1))]) {
      d = 1 + num * d
      d = 1 / (Math.abs(d) < tiny ? tiny : d)
      c = 1 + num / c
      if (Math.abs(c) < tiny) c = tiny
      h *= d * c
    }
    if (Math.abs(d * c - 1) < 1e-15) break
  }
  return h
}

/** The regularised incomplete beta function I_x(a, b). */
export const incompleteBeta = (x: number, a: number, b: number): number => {
  if (x <= 0) return 0
  if (x >= 1) return 1
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x))
  return x < (a + 1) / (a + b + 2) ? (front * betaFraction(a, b, x)) / a : 1 - (front * betaFraction(b, a, 1 - x)) / b
}

/** P(T ≤ t) for Student's t with `df` degrees of freedom (any real df > 0). */
export const studentTCdf = (t: number, df: number): number => {
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5)
  return t >= 0 ? 1 - tail : tail
}

/** The p-quantile of Student's t with `df` degrees of freedom (any real df > 0; Infinity gives the normal's). */
export const studentTQuantile = (p: number, df: number): number => {
  if (!(p > 0 && p < 1)) return p === 0 ? -Infinity : p === 1 ? Infinity : Number.NaN
  if (!(df > 0)) return Number.NaN
  if (df === Infinity || df > 1e7) return normalQuantile(p)
  if (p < 0.5) return -studentTQuantile(1 - p, df)
  // Bracket above the normal quantile (t's tails are heavier), then bisect the CDF.
  let lo = 0
  let hi = Math.max(1, normalQuantile(p))
  while (studentTCdf(hi, df) < p) hi *= 2
  for (let i = 0; i < 200 && hi - lo > 1e-12 * hi; i++) {
    const mid = (lo + hi) / 2
    if (studentTCdf(mid, df) < p) lo = mid
    else hi = mid
  }
  return (lo + hi) / 2
}

/** value ± t(1 − α/2, df)·se, at confidence `level` = 1 − α. */
export const symmetric = (value: number, se: number, df: number, level = 0.95): Interval => {
  if (se === 0) return exact(value)
  const q = studentTQuantile(1 - (1 - level) / 2, df)
  return { value, lo: value - q * se, hi: value + q * se, level }
}

/** P(X ≤ k) for X ~ Binomial(n, 1/2). */
const halfBinomialCdf = (k: number, n: number): number => {
  let sum = 0
  let term = Math.pow(0.5, n)
  for (let i = 0; i <= k; i++) {
    sum += term
    term = (term * (n - i)) / (i + 1)
  }
  return sum
}

/** The sample variance (n − 1 divisor). */
export const variance = (xs: ArrayLike<number>): number => {
  const n = xs.length
  let mean = 0
  for (let i = 0; i < n; i++) mean += xs[i]!
  mean /= n
  let ss = 0
  for (let i = 0; i < n; i++) ss += (xs[i]! - mean) ** 2
  return ss / (n - 1)
}

const sortedCopy = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)

export const median = (xs: ReadonlyArray<number>): number => {
  const s = sortedCopy(xs)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/**
 * The median of independent measurements with its distribution-free
 * interval: [x₍ₖ₎, x₍ₙ₋ₖ₊₁₎] for the largest k whose coverage
 * 1 − 2·P(Bin(n, ½) < k) is still at least `level`. Fewer than 6 values
 * cannot reach 95%: their interval is the range, with the lower level it has.
 */
export const medianInterval = (xs: ReadonlyArray<number>, level = 0.95): Interval => {
  const n = xs.length
  if (n === 0) return { value: Number.NaN, lo: Number.NaN, hi: Number.NaN, level: 0 }
  const s = sortedCopy(xs)
  let k = 1
  while (k + 1 <= n - k && 1 - 2 * halfBinomialCdf(k, n) >= level) k++
  return { value: median(s), lo: s[k - 1]!, hi: s[n - k]!, level: n === 1 ? 0 : 1 - 2 * halfBinomialCdf(k - 1, n) }
}

/** Wilson's score interval of a proportion of `successes` in `n` trials. */
export const wilson = (successes: number, n: number, level = 0.95): Interval => {
  const z = normalQuantile(1 - (1 - level) / 2)
  const p = successes / n
  const centre = (p + (z * z) / (2 * n)) / (1 + (z * z) / n)
  const half = (z / (1 + (z * z) / n)) * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))
  return { value: p, lo: centre - half, hi: centre + half, level }
}
