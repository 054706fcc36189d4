/**
 * Progress of long loops: a bar with step, rate and ETA redrawn in place on
 * a terminal, plain log lines every `Interval` elsewhere (a CI log, a file,
 * `--log-format json`). Rates count only the steps done in this process, so
 * a resumed run does not report the resumed steps as instantaneous.
 */
import { Clock, Context, Duration, Effect } from "effect"

export type Display = "bar" | "lines" | "none"

export const Display = Context.Reference<Display>("@tinyfusion/core/Progress/Display", {
  defaultValue: () => (process.stderr.isTTY ? "bar" : "lines")
})

/** Time between log lines in `lines` mode. */
export const Interval = Context.Reference<Duration.Duration>("@tinyfusion/core/Progress/Interval", {
  defaultValue: () => Duration.seconds(10)
})

export interface Figures {
  readonly label: string
  readonly done: number
  readonly total: number
  /** Steps already done when this process started (a resume). */
  readonly start: number
  readonly elapsedMillis: number
  readonly extra?: Readonly<Record<string, number>>
}

/** Steps per second in this process; undefined before any time has passed. */
export const rate = (f: Figures): number | undefined =>
  f.elapsedMillis > 0 && f.done > f.start ? ((f.done - f.start) * 1000) / f.elapsedMillis : undefined

/** Seconds left at the current rate. */
export const eta = (f: Figures): number | undefined => {
  const r = rate(f)
  return r === undefined ? undefined : (f.total - f.done) / r
}

/** 75 → "1m15s", 3700 → "1h01m", 9 → "9s". */
export const formatDuration = (seconds: number): string => {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
}

const formatNumber = (x: number): string =>
  !Number.isFinite(x) ? String(x) : Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : x.toPrecision(4)

/** The text after the bar: "120/1000 12.0 it/s ETA 1m13s loss 0.1234". */
export const describe = (f: Figures): string => {
  const r = rate(f)
  const left = eta(f)
  const parts = [
    `${f.done}/${f.total}`,
    r === undefined ? "- it/s" : `${r >= 10 ? r.toFixed(0) : r.toFixed(2)} it/s`,
    left === undefined ? "ETA -" : `ETA ${formatDuration(left)}`
  ]
  for (const [name, value] of Object.entries(f.extra ?? {})) parts.push(`${name} ${formatNumber(value)}`)
  return parts.join(" ")
}

/** "[#####.....]" for a fraction in [0, 1]. */
export const bar = (fraction: number, width: number): string => {
  const filled = Math.round(Math.min(Math.max(fraction, 0), 1) * width)
  return `[${"#".repeat(filled)}${".".repeat(width - filled)}]`
}

export interface Progress {
  readonly update: (done: number, extra?: Readonly<Record<string, number>>) => Effect.Effect<void>
  readonly finish: Effect.Effect<void>
}

const redrawMillis = 100

/** A progress report for `total` steps, `start` of them already done. */
export const make = Effect.fnUntraced(function*(label: string, total: number, start = 0) {
  const display = yield* Display
  const interval = Duration.toMillis(yield* Interval)
  const began = yield* Clock.currentTimeMillis
  let lastShown = Number.NEGATIVE_INFINITY
  let latest: Figures = { label, done: start, total, start, elapsedMillis: 0 }
  let shown: Figures | undefined
  const show = (f: Figures) =>
    Effect.andThen(Effect.sync(() => void (shown = f)), display === "bar"
      ? Effect.sync(() => process.stderr.write(`\r${label} ${bar(f.done / Math.max(f.total, 1), 24)} ${describe(f)}\x1b[K`))
      : display === "lines"
      ? Effect.logInfo(`${label} ${describe(f)}`)
      : Effect.void)
  const update = (done: number, extra?: Readonly<Record<string, number>>) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      latest = extra === undefined
        ? { label, done, total, start, elapsedMillis: now - began }
        : { label, done, total, start, elapsedMillis: now - began, extra }
      if (now - lastShown < (display === "bar" ? redrawMillis : interval)) return
      lastShown = now
      yield* show(latest)
    })
  const finish = Effect.gen(function*() {
    if (shown !== latest) yield* show(latest)
    if (display === "bar") yield* Effect.sync(() => process.stderr.write("\n"))
  })
  return { update, finish } satisfies Progress
})
