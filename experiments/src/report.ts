/**
 * The reproduction report: the instrument check, every claim with its
 * verdict and the differences it rests on, each table with our numbers (±
 * their 95% half-widths) beside the paper's, the figures, and how every
 * interval is computed. One document model rendered twice: Markdown
 * (figures linked) and a self-contained HTML page (figures inlined).
 */
import { SchemaAST } from "effect"
import { Interval, Metrics } from "@tinyfusion/eval"
import * as Claims from "./claims.ts"
import * as Estimates from "./estimates.ts"
import * as Paper from "./paper.ts"

type Block =
  | { readonly _tag: "heading"; readonly level: 1 | 2; readonly text: string }
  | { readonly _tag: "paragraph"; readonly text: string; readonly link?: { readonly text: string; readonly href: string } }
  | { readonly _tag: "table"; readonly header: ReadonlyArray<string>; readonly rows: ReadonlyArray<ReadonlyArray<string>> }
  | { readonly _tag: "image"; readonly file: string; readonly alt: string }

export interface Input {
  readonly preset: string
  /** Whether the preset is sized for its verdicts to be evidence (quick is not: the report says so first). */
  readonly evidence: boolean
  /** The committed reproduction, relative to the report's directory. */
  readonly committedResults: string
  /** What the run was trained and evaluated on, e.g. "Fashion-MNIST" or "synthetic fixture". */
  readonly dataset: string
  readonly backend: string
  readonly results: Estimates.Results
  /** The feature network's test accuracy (the instrument check), where its stage ran; or the published one the run used. */
  readonly featureNet?: Claims.FeatureNet | Claims.PublishedFeatureNet
  /** How the intervals were made: the full protocol's bootstrap, and the seeds of each grid that has several. */
  readonly method: {
    readonly replicates: number
    readonly spatialReplicates: number
    readonly groups: number
    readonly seeds: ReadonlyArray<{ readonly table: string; readonly seeds: number }>
  }
  /** Figure files (PNG) in the run directory, by title. */
  readonly figures: ReadonlyArray<{ readonly title: string; readonly file: string }>
  /** Sample grids (PNG) in the run directory, by cell. */
  readonly samples: ReadonlyArray<{ readonly cell: string; readonly file: string }>
  /** The stages' own timings summed (stored in their manifests, so a rerun of cache hits reports the same). */
  readonly computeSeconds: number
  /** Cells that produced no result, and why. */
  readonly failures: ReadonlyArray<{ readonly cell: string; readonly reason: string }>
}

/** The evaluation's scores as columns, in their order, under their titles (eval Metrics.Scores). */
const scoreColumns = Object.entries(Metrics.Scores.fields).map(([name, field]) =>
  [name as Estimates.Metric, SchemaAST.resolveTitle(field.ast) ?? name, 2] as const
)

const columns: ReadonlyArray<readonly [Estimates.Metric, string, number]> = [
  ["calibrationLoss", "calib. loss", 3],
  ["initDistillLoss", "init. distill loss", 1],
  ...scoreColumns,
  ["itPerS", "it/s", 2],
  ["confidence", "confidence", 3]
]

const fixed = (x: number, digits: number) => (Number.isFinite(x) ? x.toFixed(digits) : String(x))

/**
 * Ours: value ± the 95% half-width (the value alone when exact; "± ?" for a
 * sampled number without replicates), "NaN" for a diverged run's samples,
 * "–" when absent.
 */
const ours = (results: Estimates.Results, cell: string, key: Estimates.Metric, digits: number): string => {
  if (Estimates.isSampled(key) && results.get(cell)?.runs.some((r) => r.metrics.diverged === true)) return "NaN"
  const found = Estimates.summary(results, cell).find(([m]) => m === key)
  if (found === undefined) return "–"
  const e = found[1]
  if (e.lo === e.hi) return fixed(e.value, digits)
  return `${fixed(e.value, digits)} ± ${Number.isFinite(e.hi - e.lo) ? fixed(Interval.halfWidth(e), digits) : "?"}`
}

const paper = (row: Paper.Metrics, key: Estimates.Metric, digits: number): string => {
  if (row.diverged === true && key !== "calibrationLoss" && key !== "initDistillLoss") return "NaN"
  const v = row[key]
  return typeof v === "number" ? fixed(v, digits) : "–"
}

/** Our numbers beside the paper's for the rows of one table that we reproduce. */
export const compareTable = (rows: ReadonlyArray<Paper.Row>, results: Estimates.Results): Block => {
  const reproduced = rows.filter((r): r is Paper.Row & { cell: string } => r.cell !== undefined)
  const used = columns.filter(([key, , digits]) => reproduced.some((r) => r[key] !== undefined || ours(results, r.cell, key, digits) !== "–"))
  return {
    _tag: "table",
    header: ["", ...used.flatMap(([, name]) => [`${name} (ours)`, `${name} (paper)`])],
    rows: reproduced.map((r) => [
      r.depth === undefined ? r.label : `${r.label} [${r.depth}]`,
      ...used.flatMap(([key, , digits]) => [ours(results, r.cell, key, digits), paper(r, key, digits)])
    ])
  }
}

/** Figure 4's shapes: the depths, then width pruning at the same shares of parameters removed. */
const speedShapes: ReadonlyArray<{ readonly cell: string; readonly label: string; readonly paper: { readonly itPerS: number; readonly parameters: number } | undefined }> = [
  ...[28, 21, 14, 7].map((depth) => ({
    cell: `f4/depth-${depth}`,
    label: `depth ${depth}`,
    paper: Paper.figure4.itPerS.find((p) => p.depth === depth)
  })),
  ...[25, 50, 75].map((percent) => ({
    cell: `f4/width-${percent}`,
    label: `width −${percent}%`,
    paper: Paper.figure4.width.find((p) => p.removed === percent / 100)
  }))
]

const speedTable = (results: Estimates.Results): Block => {
  const paperBase = Paper.figure4.itPerS[0]
  const fix = (x: number | undefined, d: number) => (x === undefined || !Number.isFinite(x) ? "–" : x.toFixed(d))
  const range = (i: Interval.Interval | undefined, d: number) => (i === undefined ? "–" : `${fix(i.value, d)} [${fix(i.lo, d)}, ${fix(i.hi, d)}]`)
  const percent = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? "–" : `${(100 * x).toFixed(1)}%`)
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a / b)
  const measured = <A>(f: () => A): A | undefined => {
    try {
      return f()
    } catch (e) {
      if (e instanceof Estimates.Missing) return undefined
      throw e
    }
  }
  const base = results.get("f4/depth-28")?.speed?.parameters
  return {
    _tag: "table",
    header: ["shape", "parameters removed (ours)", "it/s (ours)", "speed-up (ours)", "linear (ours)", "it/s (paper)", "speed-up (paper)", "linear (paper)"],
    rows: speedShapes.map(({ cell, label, paper }) => {
      const kept = ratio(results.get(cell)?.speed?.parameters, base)
      return [
        label,
        percent(kept === undefined ? undefined : 1 - kept),
        range(measured(() => Estimates.speed(results, cell)), 2),
        range(measured(() => Estimates.speedup(results, cell, "f4/depth-28")), 2),
        fix(kept === undefined ? undefined : 1 / kept, 2),
        fix(paper?.itPerS, 2),
        fix(ratio(paper?.itPerS, paperBase.itPerS), 2),
        fix(ratio(paperBase.parameters, paper?.parameters), 2)
      ]
    })
  }
}

/** "n reproduced, m refuted, k inconclusive, j not run.", and what the numbers alone give where they are no evidence. */
export const verdictLine = (judgements: ReadonlyArray<Claims.Judgement>, instrument: Claims.Instrument): string => {
  const count = (v: Claims.Verdict, of: (j: Claims.Judgement) => Claims.Verdict) => judgements.filter((j) => of(j) === v).length
  const line = (of: (j: Claims.Judgement) => Claims.Verdict) =>
    `${count("reproduced", of)} reproduced, ${count("refuted", of)} refuted, ${count("inconclusive", of)} inconclusive, ${count("not run", of)} not run`
  return instrument.works === true
    ? `${line((j) => j.verdict)}.`
    : `${line((j) => j.verdict)}. ${noEvidence(instrument)} The numbers alone: ${line((j) => j.numbersAlone ?? j.verdict)}.`
}

const noEvidence = (instrument: Claims.Instrument) =>
  instrument.works === false
    ? "The instrument check failed: every verdict rests on no evidence and counts as inconclusive."
    : "The instrument was not checked: no verdict is shown to rest on evidence, and each counts as inconclusive."

/** A verdict as the claims table shows it: marked where it rests on no evidence. */
export const verdictText = (j: Claims.Judgement): string =>
  j.numbersAlone === undefined
    ? j.verdict
    : j.numbersAlone === j.verdict
    ? `${j.verdict} (no evidence)`
    : `${j.verdict} (no evidence; the numbers alone: ${j.numbersAlone})`

/** How every number and verdict of the report is computed. */
const methods = (m: Input["method"]): ReadonlyArray<Block> => [
  { _tag: "heading", level: 2, text: "How the numbers and verdicts are computed" },
  {
    _tag: "paragraph",
    text: `Ours are shown as value ± the half-width of a 95% interval. FID, sFID, IS, precision and recall: a bootstrap of ` +
      `${m.replicates} replicates (sFID: the first ${m.spatialReplicates}) over the generated samples and the reference images, ` +
      `each set cut into at most ${m.groups} groups of consecutive rows and a replicate drawing as many groups with replacement ` +
      `from each set (precision and recall keep each point's k-NN radius and count only the drawn groups' balls). ` +
      `Every evaluation of a protocol samples from the same noise and labels and draws the same groups, so the difference of two ` +
      `cells is bootstrapped replicate by replicate (paired), and noise common to both cancels. A value is the mean over a cell's ` +
      `recovery seeds; its interval is value ± t(0.975, ν)·√(V_boot + s²/S): V_boot the variance over replicates of the seed-mean, ` +
      `s² the variance of the S per-seed values (S ≥ 2), ν by Welch–Satterthwaite. ` +
      (m.seeds.length === 0
        ? "Every cell ran with one recovery seed, so its interval covers the evaluation's sampling only, not training's randomness. "
        : `Cells of ${m.seeds.map((s) => `Table ${s.table} ran with ${s.seeds} recovery seeds`).join(", ")}; the others with one, whose interval covers the evaluation's sampling only. `) +
      `Calibration loss and decision confidence are exact: fixed functions of the fixed calibration set and of the run.`
  },
  {
    _tag: "paragraph",
    text: `Sampling speed belongs to an architecture: every distinct shape of the run is timed once, in interleaved rounds (28, 21, 14, 7, ` +
      `28, 21, …) so that load that comes and goes falls on every shape alike, and cells of one shape share the figure. it/s is the ` +
      `median over rounds (± half the median's distribution-free order-statistic interval); a speed-up is the median of per-round ratios.`
  },
  {
    _tag: "paragraph",
    text: `A claim is an ordering between cells' numbers. Reproduced: every part holds at 95% confidence (the interval of each ` +
      `difference lies on the claimed side of 0). Refuted: some part's opposite holds at 95%, Bonferroni-corrected over the claim's parts. ` +
      `Inconclusive: neither. A non-strict part (A ≥ B) cannot be shown without a margin, so it counts as holding unless B > A is shown; ` +
      `a threshold (confidence ≥ 0.9, a speed-up ≥ 1.8) holds when its whole interval is past it. A diverged run is the worst possible FID. ` +
      `The instrument check asks that the feature network beat chance (one trained here; a published one is taken as it is) and that ` +
      `the teacher's FID interval lie wholly below two bad models': the same network untrained, and the teacher cut to half its ` +
      `blocks by ShortGPT before any recovery; where it fails, every verdict counts as inconclusive and shows what the numbers alone would give.`
  }
]

export const document = (input: Input): ReadonlyArray<Block> => {
  const instrument = Claims.instrument(input.results, input.featureNet)
  const judged = Claims.judgeAll(input.results, instrument)
  const tables: ReadonlyArray<readonly [string, ReadonlyArray<Paper.Row>]> = [
    ["Table 1: layer pruning of DiT", Paper.table1],
    ["Table 2: MAR and SiT", Paper.table2],
    ["Table 3: calibration loss vs recoverability", Paper.table3],
    ["Table 4: pruning schemes and recoverability estimates", Paper.table4],
    ["Table 5: fine-tuning strategies", Paper.table5],
    ["Table 7: iterative pruning to D7", Paper.table7],
    ["Table 8: fine-tuning learning rate", Paper.table8]
  ]
  return [
    { _tag: "heading", level: 1, text: `TinyFusion reproduction — preset ${input.preset}` },
    ...(input.evidence ? [] : [{
      _tag: "paragraph",
      text: `These verdicts are not evidence. The ${input.preset} preset tests the plumbing: its models are too small, too briefly trained ` +
        `and too few samples are drawn for its numbers to say anything about the paper's claims. The project's reproduction is committed in`,
      link: { text: "experiments/results/", href: input.committedResults }
    } as const]),
    {
      _tag: "paragraph",
      text: `Data: ${input.dataset}. Backend: ${input.backend}. Compute time: ${(input.computeSeconds / 60).toFixed(1)} min ` +
        `(the stages' own timings, summed). ` +
        (input.featureNet !== undefined && "published" in input.featureNet
          ? `Our metrics use ${input.featureNet.published}, as the paper's do; the claims compare methods within one run.`
          : `Our metrics use the project's own feature network, so absolute values are not comparable with the paper's ` +
            `Inception-based ones; the claims compare methods within one run.`)
    },
    ...(input.failures.length === 0 ? [] : [
      { _tag: "heading", level: 2, text: "Cells that failed" } as const,
      { _tag: "table", header: ["cell", "reason"], rows: input.failures.map((f) => [f.cell, f.reason]) } as const
    ]),
    { _tag: "heading", level: 2, text: "Instrument check" },
    { _tag: "paragraph", text: instrument.works === true ? instrument.summary : `${instrument.summary} ${noEvidence(instrument)}` },
    { _tag: "heading", level: 2, text: "Claims" },
    { _tag: "paragraph", text: verdictLine(judged.map((j) => j.judgement), instrument) },
    {
      _tag: "table",
      header: ["claim", "source", "verdict", "evidence (95% intervals)"],
      rows: judged.map(({ claim, judgement }) => [claim.text, claim.source, verdictText(judgement), judgement.evidence])
    },
    ...tables.flatMap(([title, rows]): Array<Block> => [
      { _tag: "heading", level: 2, text: title },
      compareTable(rows, input.results)
    ]),
    { _tag: "heading", level: 2, text: "Figure 4: sampling speed of depth and width pruning" },
    speedTable(input.results),
    ...input.figures.flatMap((f): Array<Block> => [
      { _tag: "heading", level: 2, text: f.title },
      { _tag: "image", file: f.file, alt: f.title }
    ]),
    ...(input.samples.length === 0 ? [] : [{ _tag: "heading", level: 2, text: "Samples" } as const]),
    ...input.samples.map((s): Block => ({ _tag: "image", file: s.file, alt: `samples of ${s.cell}` })),
    ...methods(input.method)
  ]
}

const escapeCell = (s: string) => s.replaceAll("|", "\\|")

export const markdown = (blocks: ReadonlyArray<Block>): string =>
  blocks.map((b) => {
    switch (b._tag) {
      case "heading":
        return `${"#".repeat(b.level)} ${b.text}`
      case "paragraph":
        return b.link === undefined ? b.text : `${b.text} [${b.link.text}](${b.link.href}).`
      case "table":
        return [b.header, b.header.map(() => "---"), ...b.rows].map((r) => `| ${r.map(escapeCell).join(" | ")} |`).join("\n")
      case "image":
        return `![${b.alt}](${b.file})`
    }
  }).join("\n\n") + "\n"

const verdictClass = (cell: string) => (cell.startsWith("reproduced") ? "ok" : cell.startsWith("refuted") ? "bad" : "")

const escapeHtml = (s: string) => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")

/** A self-contained page: images are inlined from `readFile` (name → PNG bytes). */
export const html = (blocks: ReadonlyArray<Block>, readFile: (file: string) => Uint8Array): string => {
  const body = blocks.map((b) => {
    switch (b._tag) {
      case "heading":
        return `<h${b.level}>${escapeHtml(b.text)}</h${b.level}>`
      case "paragraph":
        return `<p>${escapeHtml(b.text)}${b.link === undefined ? "" : ` <a href="${escapeHtml(b.link.href)}">${escapeHtml(b.link.text)}</a>.`}</p>`
      case "table":
        return `<table><thead><tr>${b.header.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>${
          b.rows.map((r) => `<tr>${r.map((c) => `<td class="${verdictClass(c)}">${escapeHtml(c)}</td>`).join("")}</tr>`).join("")
        }</tbody></table>`
      case "image":
        return `<figure><img alt="${escapeHtml(b.alt)}" src="data:image/png;base64,${Buffer.from(readFile(b.file)).toString("base64")}"><figcaption>${escapeHtml(b.alt)}</figcaption></figure>`
    }
  }).join("\n")
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>TinyFusion reproduction</title>
<style>
body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f4f4f4}td.ok{background:#e6f4ea}td.bad{background:#fce8e6}img{max-width:100%}
</style></head><body>
${body}
</body></html>
`
}
