/**
 * The paper's claims, each an ordering between cells' numbers (any metric,
 * any cells), judged from our results with their uncertainty (estimates.ts):
 *
 *   reproduced    every part of the claimed ordering holds at 95% confidence
 *                 (showing all parts at 95% each is a valid 95% test of their
 *                 conjunction: an intersection–union test)
 *   refuted       the opposite of some part holds at 95% confidence,
 *                 Bonferroni-corrected over the claim's k parts (1 − 0.05/k)
 *   inconclusive  neither
 *   not run       a cell a part needs has no result
 *
 * A strict part "A < B" holds when the interval of A − B lies below 0 and is
 * reversed when it lies above. A non-strict part "A ≤ B" cannot be shown
 * without a margin: it holds unless B < A is shown. A diverged run is the
 * worst possible FID.
 *
 * A verdict is only evidence if the instrument works: `instrument` checks
 * that the feature network classifies better than chance and that the
 * teacher's FID is clearly below the untrained network's and a pruned one's
 * before recovery. Otherwise every
 * verdict rests on no evidence: it counts as inconclusive, and says what the
 * numbers alone would give.
 */
import { Interval } from "@tinyfusion/eval"
import * as Estimates from "./estimates.ts"
import type { Metric, Results, Term } from "./estimates.ts"

export type Verdict = "reproduced" | "refuted" | "inconclusive" | "not run"

export interface Judgement {
  readonly verdict: Verdict
  /** The numbers the verdict rests on: each part's difference with its 95% interval. */
  readonly evidence: string
  /** Where the instrument does not work: the verdict the numbers alone give (the verdict is then inconclusive). */
  readonly numbersAlone?: Verdict
}

type Outcome = "holds" | "reversed" | "open"

interface Finding {
  readonly outcome: Outcome
  readonly evidence: string
}

/** One comparison of a claim, checked at a confidence level; a missing cell throws Estimates.Missing. */
export interface Part {
  readonly check: (results: Results, level: number) => Finding
}

export interface Claim {
  readonly id: string
  readonly text: string
  readonly source: string
  readonly parts: ReadonlyArray<Part>
}

/** A number for evidence: 4 significant digits, at most 2 decimals from 1 up, a true minus sign. */
export const num = (x: number): string => {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "NaN" : x > 0 ? "∞" : "−∞"
  const a = Math.abs(x)
  const s = a >= 100 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : a === 0 ? "0" : x.toPrecision(3)
  return s.replace("-", "−")
}

const interval = (i: Interval.Interval): string =>
  i.lo === i.hi
    ? `${num(i.value)} (exact)`
    : Number.isFinite(i.hi - i.lo)
    ? `${num(i.value)} [${num(i.lo)}, ${num(i.hi)}]`
    : `${num(i.value)} (no interval: not bootstrapped)`

const label = (cell: string): string => cell.slice(cell.indexOf("/") + 1)

export const metricNames: Readonly<Record<Metric, string>> = {
  fid: "FID",
  sfid: "sFID",
  is: "IS",
  precision: "precision",
  recall: "recall",
  itPerS: "it/s",
  calibrationLoss: "calibration loss",
  initDistillLoss: "initial distillation loss",
  confidence: "confidence"
}

/** "FID " for every metric but FID itself, which the claims are mostly about. */
const prefix = (metric: Metric) => (metric === "fid" ? "" : `${metricNames[metric]} `)

const termsText = (terms: ReadonlyArray<Term>) =>
  terms.map((t, i) => {
    const w = Math.abs(t.weight)
    const sign = t.weight < 0 ? (i === 0 ? "−" : " − ") : i === 0 ? "" : " + "
    return `${sign}${w === 1 ? "" : `${num(w)} × `}${label(t.cell)}`
  }).join("")

type Relation = "<" | "≤" | ">" | "≥"

/**
 * The outcome of "x relation bound" for an interval of x. Strict relations
 * and every `shown` one (a threshold) hold when the whole interval is on the
 * claimed side; a non-strict comparison of cells (A ≤ B) holds unless the
 * whole interval is on the other side.
 */
const outcome = (i: Interval.Interval, relation: Relation, bound = 0, shown = false): Outcome => {
  const below = i.hi < bound || (i.lo === i.hi && i.value < bound)
  const above = i.lo > bound || (i.lo === i.hi && i.value > bound)
  const atMost = i.hi <= bound
  const atLeast = i.lo >= bound
  switch (relation) {
    case "<":
      return below ? "holds" : above ? "reversed" : "open"
    case ">":
      return above ? "holds" : below ? "reversed" : "open"
    case "≤":
      return above ? "reversed" : !shown || atMost ? "holds" : "open"
    case "≥":
      return below ? "reversed" : !shown || atLeast ? "holds" : "open"
  }
}

/** Σ weight·metric (relation) 0, the terms paired by seed and bootstrap draw. */
export const linear = (terms: ReadonlyArray<Term>, metric: Metric, relation: Relation): Part => ({
  check: (results, level) => {
    const text = `${prefix(metric)}${termsText(terms)}`
    for (const t of terms) if ((results.get(t.cell)?.runs.length ?? 0) === 0) throw new Estimates.Missing(t.cell, metric)
    if (Estimates.isSampled(metric)) {
      // A diverged run has no samples: it is the worst possible FID (IS, precision, recall).
      const worseIsHigher = metric === "fid" || metric === "sfid"
      const broken = terms.filter((t) => results.get(t.cell)?.runs.some((r) => r.metrics.diverged === true) === true)
      if (broken.length > 0) {
        const signs = new Set(broken.map((t) => Math.sign(t.weight) * (worseIsHigher ? 1 : -1)))
        const names = broken.map((t) => label(t.cell)).join(" and ")
        if (signs.size > 1) return { outcome: "open", evidence: `${text}: ${names} diverged` }
        const value = [...signs][0]! > 0 ? Infinity : -Infinity
        return { outcome: outcome(Interval.exact(value), relation), evidence: `${text} = ${num(value)} (${names} diverged)` }
      }
    }
    const e = Estimates.combination(results, terms, metric, level)
    return { outcome: outcome(e, relation), evidence: `${text} = ${interval(e)}` }
  }
})

/** a (relation) b in `metric`, shown as a − b. */
export const compare = (a: string, relation: Relation, b: string, metric: Metric = "fid"): Part =>
  linear([{ cell: a, weight: 1 }, { cell: b, weight: -1 }], metric, relation)

/** One cell's number against a constant. */
export const threshold = (cell: string, metric: Metric, relation: Relation, bound: number): Part => ({
  check: (results, level) => {
    const e = Estimates.estimate(results, cell, metric, level)
    return { outcome: outcome(e, relation, bound, true), evidence: `${prefix(metric)}${label(cell)} = ${interval(e)} (${relation} ${num(bound)})` }
  }
})

/** The speed-up of one cell's shape over another's, measured in the same rounds, against a bound. */
export const speedup = (fast: string, base: string, relation: Relation, bound: number): Part => ({
  check: (results, level) => {
    const s = Estimates.speedup(results, fast, base, level)
    // Too few rounds cannot reach the level: nothing is shown.
    const o = s.level < level && s.lo !== s.hi ? "open" : outcome(s, relation, bound, true)
    return { outcome: o, evidence: `it/s ${label(fast)} / ${label(base)} = ${interval(s)} (${relation} ${num(bound)})` }
  }
})

/** Every run of the cell diverges (some, but not all: open). */
export const diverges = (cell: string): Part => ({
  check: (results) => {
    const runs = results.get(cell)?.runs ?? []
    if (runs.length === 0) throw new Estimates.Missing(cell, "result")
    const n = runs.filter((r) => r.metrics.diverged === true).length
    const of = runs.length === 1 ? "" : ` in ${n} of ${runs.length} seeds`
    if (n === runs.length) return { outcome: "holds", evidence: `${label(cell)} diverged${of}` }
    if (n === 0) return { outcome: "reversed", evidence: `${label(cell)} converged (FID ${interval(Estimates.estimate(results, cell, "fid"))})` }
    return { outcome: "open", evidence: `${label(cell)} diverged${of}` }
  }
})

/** Spearman rank correlation (average ranks for ties). */
export const spearman = (xs: ReadonlyArray<number>, ys: ReadonlyArray<number>): number => {
  const rank = (v: ReadonlyArray<number>) => {
    const order = v.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0])
    const r = new Array<number>(v.length)
    for (let i = 0; i < order.length;) {
      let j = i
      while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++
      for (let k = i; k <= j; k++) r[order[k]![1]] = (i + j) / 2
      i = j + 1
    }
    return r
  }
  const rx = rank(xs)
  const ry = rank(ys)
  const n = xs.length
  const mean = (n - 1) / 2
  let cov = 0
  let vx = 0
  let vy = 0
  for (let i = 0; i < n; i++) {
    cov += (rx[i]! - mean) * (ry[i]! - mean)
    vx += (rx[i]! - mean) ** 2
    vy += (ry[i]! - mean) ** 2
  }
  return cov / Math.sqrt(vx * vy)
}

/** The p-quantile of values (linear interpolation between order statistics). */
const quantile = (sorted: ReadonlyArray<number>, p: number): number => {
  const h = (sorted.length - 1) * p
  const lo = Math.floor(h)
  return sorted[lo]! + (h - lo) * (sorted[Math.min(lo + 1, sorted.length - 1)]! - sorted[lo]!)
}

/**
 * Spearman's ρ between two numbers over cells (diverged cells left out)
 * against a bound. Its interval is the percentile interval of ρ over the
 * bootstrap replicates of the cells' sampled number (seed-means per draw).
 */
export const rankCorrelation = (cells: ReadonlyArray<string>, x: Metric, y: Metric, relation: Relation, bound: number): Part => ({
  check: (results, level) => {
    const kept = cells.filter((c) => !(Estimates.isSampled(y) && Estimates.diverged(results, c)))
    const value = (c: string, m: Metric) => Estimates.estimate(results, c, m).value
    const rho = spearman(kept.map((c) => value(c, x)), kept.map((c) => value(c, y)))
    const replicatesOf = (c: string, m: Metric) =>
      Estimates.isSampled(m) ? results.get(c)!.runs.map((r) => r.replicates?.[m]) : []
    const perCell = kept.map((c) => ({ x: replicatesOf(c, x), y: replicatesOf(c, y) }))
    const lengths = perCell.flatMap((p) => [...p.x, ...p.y].map((r) => r?.length ?? 0))
    const b = lengths.length === 0 ? 0 : Math.min(...lengths)
    let i: Interval.Interval = Interval.exact(rho)
    if (b >= 2) {
      const drawn = (c: string, m: Metric, reps: ReadonlyArray<ArrayLike<number> | undefined>, k: number) =>
        reps.length === 0 ? value(c, m) : reps.reduce((s, r) => s + r![k]!, 0) / reps.length
      const rhos = Array.from({ length: b }, (_, k) =>
        spearman(kept.map((c, j) => drawn(c, x, perCell[j]!.x, k)), kept.map((c, j) => drawn(c, y, perCell[j]!.y, k)))
      ).sort((p, q) => p - q)
      i = { value: rho, lo: quantile(rhos, (1 - level) / 2), hi: quantile(rhos, 1 - (1 - level) / 2), level }
    }
    return {
      outcome: outcome(i, relation, bound, true),
      evidence: `Spearman(${metricNames[x]}, ${metricNames[y]}) = ${interval(i)} over ${kept.length} masks (${relation} ${num(bound)})`
    }
  }
})

/** A claim's verdict from its parts (see the module's comment). */
export const judge = (claim: Claim, results: Results): Judgement => {
  try {
    const at95 = claim.parts.map((p) => p.check(results, 0.95))
    const k = claim.parts.length
    const corrected = k === 1 ? at95 : claim.parts.map((p) => p.check(results, 1 - 0.05 / k))
    const verdict: Verdict = at95.every((f) => f.outcome === "holds")
      ? "reproduced"
      : corrected.some((f) => f.outcome === "reversed")
      ? "refuted"
      : "inconclusive"
    return { verdict, evidence: at95.map((f) => f.evidence).join("; ") }
  } catch (e) {
    if (e instanceof Estimates.Missing) return { verdict: "not run", evidence: `no ${e.what} for ${e.cell}` }
    throw e
  }
}

/** The feature network's test accuracy, as its stage stored it. */
export interface FeatureNet {
  readonly accuracy: number
  readonly testImages: number
  readonly classes: number
}

/** A published feature network (the paper preset's FID Inception): its accuracy is its authors', not measured here. */
export interface PublishedFeatureNet {
  /** What it is, for the report. */
  readonly published: string
}

/** The cells the instrument check compares: the teacher, and the bad models it must be clearly better than. */
export const instrumentCells = {
  teacher: "t1/teacher",
  bad: [
    { cell: "i/untrained", name: "untrained", what: "the untrained network's", whose: "an untrained network's" },
    { cell: "i/unrecovered", name: "unrecovered", what: "the unrecovered ShortGPT D14's (half the teacher's blocks, before recovery)", whose: "a pruned model's before recovery" }
  ]
} as const

export interface Instrument {
  /** Whether the metrics tell good samples from bad (undefined: not checked, a number is missing). */
  readonly works: boolean | undefined
  /** What the check found, in sentences for the report. */
  readonly summary: string
}

/**
 * The instrument check: the feature network's test accuracy (Wilson's 95%
 * interval) must lie above chance, and the teacher's FID interval wholly
 * below each bad model's (the untrained network, the pruned one before
 * recovery): clearly apart, not merely different (the paired difference of
 * two models that both make noise can be significant and negligible). A
 * published feature network is taken as it is: only the FID tests apply.
 */
export const instrument = (results: Results, featureNet: FeatureNet | PublishedFeatureNet | undefined): Instrument => {
  const parts: Array<string> = []
  let works: boolean | undefined = true
  if (featureNet === undefined) {
    works = undefined
    parts.push("The feature network's accuracy is not known.")
  } else if ("published" in featureNet) {
    parts.push(`The feature network is ${featureNet.published}, published and not trained here: its accuracy is not measured.`)
  } else {
    const chance = 1 / featureNet.classes
    const acc = Interval.wilson(Math.round(featureNet.accuracy * featureNet.testImages), featureNet.testImages)
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`
    const above = acc.lo > chance
    if (!above) works = false
    parts.push(
      `The feature network classifies ${pct(acc.value)} [${pct(acc.lo)}, ${pct(acc.hi)}] of ${featureNet.testImages} test images correctly ` +
        `(chance: ${pct(chance)})${above ? "." : ": no better than chance."}`
    )
  }
  const { teacher } = instrumentCells
  for (const bad of instrumentCells.bad) {
    try {
      const t = Estimates.estimate(results, teacher, "fid")
      const b = Estimates.estimate(results, bad.cell, "fid")
      const gap = Estimates.difference(results, bad.cell, teacher, "fid")
      const apart = t.hi < b.lo
      if (!apart) works = false
      parts.push(
        `The teacher's FID is ${interval(t)}, ${bad.what} ${interval(b)} (${bad.name} − teacher = ${interval(gap)})` +
          (apart
            ? `: the intervals do not overlap, so the metrics tell the teacher's samples from ${bad.whose}.`
            : `: the intervals overlap, so the metrics cannot tell the teacher's samples from ${bad.whose}.`)
      )
    } catch (e) {
      if (!(e instanceof Estimates.Missing)) throw e
      works = works === false ? false : undefined
      parts.push(`The teacher and ${bad.cell} were not both evaluated (no ${e.what} for ${e.cell}).`)
    }
  }
  return { works, summary: parts.join(" ") }
}

const t3 = (c: string) => `t3/${c}`

export const claims: ReadonlyArray<Claim> = [
  {
    id: "learnable-beats-baselines",
    text: "After fine-tuning, the learnable method beats ShortGPT, Flux-Lite, sensitivity analysis and the min-loss mask",
    source: "Table 3",
    parts: ["shortgpt", "flux-lite", "sensitivity", "min-loss"].map((c) => compare(t3("learnable"), "<", t3(c)))
  },
  {
    id: "calibration-loss-not-predictive",
    text: "Calibration loss does not predict recoverability: the learnable mask has a higher calibration loss than the min-loss, ShortGPT and sensitivity masks yet a lower FID, and loss and FID are not positively rank-correlated",
    source: "Table 3, Figure 5",
    parts: [
      ...["min-loss", "shortgpt", "sensitivity"].flatMap((c) => [
        compare(t3("learnable"), ">", t3(c), "calibrationLoss"),
        compare(t3("learnable"), "<", t3(c))
      ]),
      rankCorrelation(["median-loss", "min-loss", "sensitivity", "shortgpt", "flux-lite", "oracle", "learnable"].map(t3), "calibrationLoss", "fid", "<", 0.5)
    ]
  },
  {
    id: "median-beats-min-loss",
    text: "A random mask of median calibration loss recovers better than the min-loss mask",
    source: "Table 3",
    parts: [compare(t3("median-loss"), "<", t3("min-loss"))]
  },
  {
    id: "scheme-order",
    text: "Pruning scheme: 1:2 ≥ 2:4 > 7:14 (LoRA recoverability estimate)",
    source: "Table 4",
    parts: [compare("t4/1:2-lora", "≤", "t4/2:4-lora"), compare("t4/2:4-lora", "<", "t4/7:14-lora")]
  },
  {
    id: "update-order",
    text: "Recoverability estimate: LoRA ≥ Full > Frozen (1:2 and 2:4)",
    source: "Table 4",
    parts: ["1:2", "2:4"].flatMap((s) => [compare(`t4/${s}-lora`, "≤", `t4/${s}-full`), compare(`t4/${s}-full`, "<", `t4/${s}-frozen`)])
  },
  {
    id: "decisions-converge",
    text: "Learned decisions converge for 1:2 and 2:4 (confidence ≥ 0.9); 7:14 converges less",
    source: "Figures 6, 9–11",
    parts: [
      threshold("t4/1:2-lora", "confidence", "≥", 0.9),
      threshold("t4/2:4-lora", "confidence", "≥", 0.9),
      compare("t4/7:14-lora", "<", "t4/1:2-lora", "confidence"),
      compare("t4/7:14-lora", "<", "t4/2:4-lora", "confidence")
    ]
  },
  {
    id: "kd-order",
    text: "Masked KD (2σ, 4σ) > logits KD > plain fine-tuning",
    source: "Table 5",
    parts: [compare("t5/masked-kd-2", "<", "t5/logits-kd"), compare("t5/masked-kd-4", "<", "t5/logits-kd"), compare("t5/logits-kd", "<", "t5/finetune")]
  },
  {
    id: "repkd-diverges",
    text: "Plain RepKD and Masked KD with 0.1σ diverge",
    source: "Table 5",
    parts: [diverges("t5/repkd"), diverges("t5/masked-kd-0.1")]
  },
  {
    id: "tinydit-beats-d14-baselines",
    text: "TinyDiT-D14 beats every 28⇒14 baseline after the same fine-tuning (ShortGPT, Flux-Lite, sensitivity, Oracle)",
    source: "Table 1",
    parts: ["shortgpt-d14", "flux-lite-d14", "sensitivity-d14", "oracle-d14"].map((c) => compare("t1/tinydit-d14", "<", `t1/${c}`))
  },
  {
    id: "kd-helps",
    text: "Distillation improves recovery: TinyDiT-D14 (KD) < TinyDiT-D14 (fine-tuning)",
    source: "Table 1",
    parts: [compare("t1/tinydit-d14-kd", "<", "t1/tinydit-d14")]
  },
  {
    id: "d19-beats-shortgpt",
    text: "TinyDiT-D19 (KD) beats ShortGPT at depth 19",
    source: "Table 1",
    parts: [compare("t1/tinydit-d19-kd", "<", "t1/shortgpt-d19")]
  },
  {
    id: "linear-speedup",
    text: "Depth pruning speeds sampling up almost linearly: about 2× at 50% depth (paper 1.96×)",
    source: "Figure 4",
    parts: [speedup("f4/depth-14", "f4/depth-28", "≥", 1.8)]
  },
  {
    id: "tinymar-beats-base",
    text: "TinyMAR-D16 beats the 24-block MAR-Base trained from scratch, after 10% of its training (paper FID 2.28 vs 2.31)",
    source: "Table 2",
    parts: [compare("t2/tinymar-d16", "<", "t2/mar-base")]
  },
  {
    id: "width-below-depth",
    text: "At half the parameters, width pruning (Diff-Pruning's uniform widths) speeds sampling up less than depth pruning (paper 1.51× vs 1.96×)",
    source: "Figure 4, Table 1",
    // Timed in the same rounds: width-50 / depth-14 is the ratio of their speed-ups over the teacher, round by round.
    parts: [speedup("f4/width-50", "f4/depth-14", "<", 1)]
  },
  {
    id: "sit-generalises",
    text: "Learnable pruning generalises to SiT: TinySiT-D14 after fine-tuning comes within 1.5× of its teacher's FID (paper 3.02 vs 2.06)",
    source: "Table 2",
    parts: [linear([{ cell: "t2/tinysit-d14", weight: 1 }, { cell: "t2/sit-teacher", weight: -1.5 }], "fid", "<")]
  },
  {
    id: "iterative-d7",
    text: "For D7, pruning and distilling from the crafted TinyDiT-D14 is best",
    source: "Table 7",
    parts: ["teacher-xl-from-xl", "teacher-xl-from-d14", "teacher-d14-from-xl"].map((c) => compare("t7/teacher-d14-from-d14", "<", `t7/${c}`))
  },
  {
    id: "lr-2e-4",
    text: "Fine-tuning learning rate 2e-4 beats 1e-4 and 5e-5",
    source: "Table 8",
    parts: [compare("t8/lr-2e-4", "<", "t8/lr-1e-4"), compare("t8/lr-2e-4", "<", "t8/lr-5e-5")]
  }
]

export interface Judged {
  readonly claim: Claim
  readonly judgement: Judgement
}

/** Every claim judged; with an instrument that does not work (or was not checked) no verdict counts. */
export const judgeAll = (results: Results, instrument: Instrument): ReadonlyArray<Judged> =>
  claims.map((claim) => {
    const j = judge(claim, results)
    const judgement = instrument.works === true || j.verdict === "not run" ? j : { ...j, verdict: "inconclusive" as const, numbersAlone: j.verdict }
    return { claim, judgement }
  })
