/**
 * The paper's claims, each with a verdict computed from our stored metrics:
 * reproduced, not reproduced, or not run (a cell it needs has no result).
 * A diverged run counts as the worst possible FID.
 *
 * "A ≥ B" in quality is read as FID(A) ≤ (1 + tolerance)·FID(B): at mini scale
 * a few percent of FID is evaluation noise. "A > B" is strict.
 */
import type { Metrics } from "./paper.ts"

export type Results = ReadonlyMap<string, Metrics>
export type Verdict = "reproduced" | "not reproduced" | "not run"

export interface Judgement {
  readonly verdict: Verdict
  /** The numbers the verdict rests on, for the report. */
  readonly evidence: string
}

export interface Claim {
  readonly id: string
  readonly text: string
  readonly source: string
  readonly judge: (results: Results) => Judgement
}

export const tolerance = 0.05

class Missing {
  readonly cell: string
  readonly metric: string
  constructor(cell: string, metric: string) {
    this.cell = cell
    this.metric = metric
  }
}

const metric = (results: Results, cell: string, key: "fid" | "calibrationLoss" | "itPerS" | "confidence"): number => {
  const m = results.get(cell)
  if (m === undefined) throw new Missing(cell, key)
  if (key === "fid" && m.diverged === true) return Infinity
  const v = m[key]
  if (v === undefined || Number.isNaN(v)) throw new Missing(cell, key)
  return v
}

const fmt = (x: number) => (Number.isFinite(x) ? (Math.abs(x) >= 100 ? x.toFixed(1) : x.toPrecision(4)) : "diverged")

/** Wraps a judgement so a missing cell or metric gives "not run". */
const judged = (f: (fid: (cell: string) => number, get: typeof metric, results: Results) => Judgement) => (results: Results): Judgement => {
  try {
    return f((cell) => metric(results, cell, "fid"), metric, results)
  } catch (e) {
    if (e instanceof Missing) return { verdict: "not run", evidence: `no ${e.metric} for ${e.cell}` }
    throw e
  }
}

const verdict = (ok: boolean): Verdict => (ok ? "reproduced" : "not reproduced")
const atLeastAsGood = (a: number, b: number) => a <= b * (1 + tolerance)

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

export const claims: ReadonlyArray<Claim> = [
  {
    id: "learnable-beats-baselines",
    text: "After fine-tuning, the learnable method beats ShortGPT, Flux-Lite, sensitivity analysis and the min-loss mask",
    source: "Table 3",
    judge: judged((fid) => {
      const ours = fid("t3/learnable")
      const others = ["t3/shortgpt", "t3/flux-lite", "t3/sensitivity", "t3/min-loss"].map((c) => [c, fid(c)] as const)
      return {
        verdict: verdict(others.every(([, f]) => ours < f)),
        evidence: `learnable ${fmt(ours)} vs ${others.map(([c, f]) => `${c.slice(3)} ${fmt(f)}`).join(", ")}`
      }
    })
  },
  {
    id: "calibration-loss-not-predictive",
    text: "Calibration loss does not predict recoverability: the learnable mask has a higher calibration loss than the min-loss, ShortGPT and sensitivity masks yet a lower FID, and loss and FID are not positively rank-correlated",
    source: "Table 3, Figure 5",
    judge: judged((fid, get, results) => {
      const cells = ["t3/median-loss", "t3/min-loss", "t3/sensitivity", "t3/shortgpt", "t3/flux-lite", "t3/oracle", "t3/learnable"]
      const loss = (c: string) => get(results, c, "calibrationLoss")
      const lowLoss = ["t3/min-loss", "t3/shortgpt", "t3/sensitivity"]
      const inverted = lowLoss.every((c) => loss("t3/learnable") > loss(c) && fid("t3/learnable") < fid(c))
      const finite = cells.filter((c) => Number.isFinite(fid(c)))
      const rho = spearman(finite.map(loss), finite.map(fid))
      return {
        verdict: verdict(inverted && rho < 0.5),
        evidence: `learnable loss ${fmt(loss("t3/learnable"))} / FID ${fmt(fid("t3/learnable"))}; ` +
          lowLoss.map((c) => `${c.slice(3)} ${fmt(loss(c))} / ${fmt(fid(c))}`).join(", ") +
          `; Spearman(loss, FID) = ${rho.toFixed(2)} over ${finite.length} masks`
      }
    })
  },
  {
    id: "median-beats-min-loss",
    text: "A random mask of median calibration loss recovers better than the min-loss mask",
    source: "Table 3",
    judge: judged((fid) => ({
      verdict: verdict(fid("t3/median-loss") < fid("t3/min-loss")),
      evidence: `median-loss FID ${fmt(fid("t3/median-loss"))} vs min-loss ${fmt(fid("t3/min-loss"))}`
    }))
  },
  {
    id: "scheme-order",
    text: "Pruning scheme: 1:2 ≥ 2:4 > 7:14 (LoRA recoverability estimate)",
    source: "Table 4",
    judge: judged((fid) => {
      const [a, b, c] = ["t4/1:2-lora", "t4/2:4-lora", "t4/7:14-lora"].map(fid) as [number, number, number]
      return { verdict: verdict(atLeastAsGood(a, b) && b < c), evidence: `FID 1:2 ${fmt(a)}, 2:4 ${fmt(b)}, 7:14 ${fmt(c)}` }
    })
  },
  {
    id: "update-order",
    text: "Recoverability estimate: LoRA ≥ Full > Frozen (1:2 and 2:4)",
    source: "Table 4",
    judge: judged((fid) => {
      const rows = ["1:2", "2:4"].map((s) => [s, fid(`t4/${s}-lora`), fid(`t4/${s}-full`), fid(`t4/${s}-frozen`)] as const)
      return {
        verdict: verdict(rows.every(([, l, f, z]) => atLeastAsGood(l, f) && f < z)),
        evidence: rows.map(([s, l, f, z]) => `${s}: LoRA ${fmt(l)}, Full ${fmt(f)}, Frozen ${fmt(z)}`).join("; ")
      }
    })
  },
  {
    id: "decisions-converge",
    text: "Learned decisions converge for 1:2 and 2:4 (confidence ≥ 0.9); 7:14 converges less",
    source: "Figures 6, 9–11",
    judge: judged((_, get, results) => {
      const conf = (c: string) => get(results, c, "confidence")
      const [a, b, c] = ["t4/1:2-lora", "t4/2:4-lora", "t4/7:14-lora"].map(conf) as [number, number, number]
      return {
        verdict: verdict(a >= 0.9 && b >= 0.9 && c < Math.min(a, b)),
        evidence: `mean confidence 1:2 ${a.toFixed(3)}, 2:4 ${b.toFixed(3)}, 7:14 ${c.toFixed(3)}`
      }
    })
  },
  {
    id: "kd-order",
    text: "Masked KD (2σ, 4σ) > logits KD > plain fine-tuning",
    source: "Table 5",
    judge: judged((fid) => {
      const [m2, m4, kd, ft] = ["t5/masked-kd-2", "t5/masked-kd-4", "t5/logits-kd", "t5/finetune"].map(fid) as [number, number, number, number]
      return {
        verdict: verdict(m2 < kd && m4 < kd && kd < ft),
        evidence: `FID masked 2σ ${fmt(m2)}, 4σ ${fmt(m4)}, logits KD ${fmt(kd)}, fine-tuning ${fmt(ft)}`
      }
    })
  },
  {
    id: "repkd-diverges",
    text: "Plain RepKD and Masked KD with 0.1σ diverge",
    source: "Table 5",
    judge: judged((fid) => {
      const [rep, tiny] = [fid("t5/repkd"), fid("t5/masked-kd-0.1")]
      return { verdict: verdict(rep === Infinity && tiny === Infinity), evidence: `RepKD ${fmt(rep)}, 0.1σ ${fmt(tiny)}` }
    })
  },
  {
    id: "tinydit-beats-d14-baselines",
    text: "TinyDiT-D14 beats every 28⇒14 baseline after the same fine-tuning (ShortGPT, Flux-Lite, sensitivity, Oracle)",
    source: "Table 1",
    judge: judged((fid) => {
      const ours = fid("t1/tinydit-d14")
      const others = ["t1/shortgpt-d14", "t1/flux-lite-d14", "t1/sensitivity-d14", "t1/oracle-d14"].map((c) => [c, fid(c)] as const)
      return {
        verdict: verdict(others.every(([, f]) => ours < f)),
        evidence: `TinyDiT-D14 ${fmt(ours)} vs ${others.map(([c, f]) => `${c.slice(3)} ${fmt(f)}`).join(", ")}`
      }
    })
  },
  {
    id: "kd-helps",
    text: "Distillation improves recovery: TinyDiT-D14 (KD) < TinyDiT-D14 (fine-tuning)",
    source: "Table 1",
    judge: judged((fid) => ({
      verdict: verdict(fid("t1/tinydit-d14-kd") < fid("t1/tinydit-d14")),
      evidence: `KD ${fmt(fid("t1/tinydit-d14-kd"))} vs fine-tuning ${fmt(fid("t1/tinydit-d14"))}`
    }))
  },
  {
    id: "d19-beats-shortgpt",
    text: "TinyDiT-D19 (KD) beats ShortGPT at depth 19",
    source: "Table 1",
    judge: judged((fid) => ({
      verdict: verdict(fid("t1/tinydit-d19-kd") < fid("t1/shortgpt-d19")),
      evidence: `TinyDiT-D19 ${fmt(fid("t1/tinydit-d19-kd"))} vs ShortGPT ${fmt(fid("t1/shortgpt-d19"))}`
    }))
  },
  {
    id: "linear-speedup",
    text: "Depth pruning speeds sampling up almost linearly: about 2× at 50% depth (paper 1.96×)",
    source: "Figure 4",
    judge: judged((_, get, results) => {
      const s = get(results, "f4/depth-14", "itPerS") / get(results, "f4/depth-28", "itPerS")
      return { verdict: verdict(s >= 1.8), evidence: `it/s ratio D14 / D28 = ${s.toFixed(2)}×` }
    })
  },
  {
    id: "tinymar-beats-base",
    text: "TinyMAR-D16 beats the 24-block MAR-Base trained from scratch, after 10% of its training (paper FID 2.28 vs 2.31)",
    source: "Table 2",
    judge: judged((fid) => {
      const tiny = fid("t2/tinymar-d16")
      const base = fid("t2/mar-base")
      return { verdict: verdict(tiny < base), evidence: `TinyMAR-D16 ${fmt(tiny)} vs MAR-Base ${fmt(base)} (MAR-Large ${fmt(fid("t2/mar-large"))})` }
    })
  },
  {
    id: "width-below-depth",
    text: "At half the parameters, width pruning (Diff-Pruning's uniform widths) speeds sampling up less than depth pruning (paper 1.51× vs 1.96×)",
    source: "Figure 4, Table 1",
    judge: judged((_, get, results) => {
      const full = get(results, "f4/depth-28", "itPerS")
      const depth = get(results, "f4/depth-14", "itPerS") / full
      const width = get(results, "f4/width-50", "itPerS") / full
      return { verdict: verdict(width < depth), evidence: `speed-up at half the parameters: depth ${depth.toFixed(2)}×, width ${width.toFixed(2)}×` }
    })
  },
  {
    id: "sit-generalises",
    text: "Learnable pruning generalises to SiT: TinySiT-D14 after fine-tuning comes within 1.5× of its teacher's FID (paper 3.02 vs 2.06)",
    source: "Table 2",
    judge: judged((fid) => ({
      verdict: verdict(fid("t2/tinysit-d14") <= 1.5 * fid("t2/sit-teacher")),
      evidence: `TinySiT-D14 ${fmt(fid("t2/tinysit-d14"))} vs SiT teacher ${fmt(fid("t2/sit-teacher"))}`
    }))
  },
  {
    id: "iterative-d7",
    text: "For D7, pruning and distilling from the crafted TinyDiT-D14 is best",
    source: "Table 7",
    judge: judged((fid) => {
      const cells = ["t7/teacher-xl-from-xl", "t7/teacher-xl-from-d14", "t7/teacher-d14-from-xl", "t7/teacher-d14-from-d14"]
      const f = cells.map(fid)
      return { verdict: verdict(f[3]! <= Math.min(...f)), evidence: cells.map((c, i) => `${c.slice(3)} ${fmt(f[i]!)}`).join(", ") }
    })
  },
  {
    id: "lr-2e-4",
    text: "Fine-tuning learning rate 2e-4 beats 1e-4 and 5e-5",
    source: "Table 8",
    judge: judged((fid) => {
      const [a, b, c] = ["t8/lr-2e-4", "t8/lr-1e-4", "t8/lr-5e-5"].map(fid) as [number, number, number]
      return { verdict: verdict(a < b && a < c), evidence: `FID 2e-4 ${fmt(a)}, 1e-4 ${fmt(b)}, 5e-5 ${fmt(c)}` }
    })
  }
]
