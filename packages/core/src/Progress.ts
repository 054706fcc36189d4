/**
 * Progress of long loops: a bar with step, rate and ETA redrawn in place on
 * a terminal, plain log lines every `Interval` elsewhere (a CI log, a file,
 * `--log-format json`). Rates count only the steps done in this process, so
 * a resumed run does not report the resumed steps as instantaneous. A
 * compute process also hands its figures to a `Sink`, which sends them to
 * the process showing one view over all its workers (the executors).
 */
import { Clock, Context, Duration, Effect, Option, Schema } from "effect"

export type Display = "bar" | "lines" | "none"

export const Display = Context.Reference<Display>("@tinyfusion/core/Progress/Display", {
  defaultValue: () => (process.stderr.isTTY ? "bar" : "lines")
})

/** Time between log lines in `lines` mode. */
export const Interval = Context.Reference<Duration.Duration>("@tinyfusion/core/Progress/Interval", {
  defaultValue: () => Duration.seconds(10)
})

export const Figures = Schema.Struct({
  label: Schema.String,
  done: Schema.Number,
  total: Schema.Number,
  /** Steps already done when this process started (a resume). */
  start: Schema.Number,
  elapsedMillis: Schema.Number,
  extra: Schema.optionalKey(Schema.Record(Schema.String, Schema.Number))
})
export type Figures = typeof Figures.Type

/** Where a report's figures go besides the display (at most every 100 ms, and at the end). */
export const Sink = Context.Reference<Option.Option<(figures: Figures) => Effect.Effect<void>>>("@tinyfusion/core/Progress/Sink", {
  defaultValue: () => Option.none()
})

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
  const sink = yield* Sink
  const began = yield* Clock.currentTimeMillis
  let lastShown = Number.NEGATIVE_INFINITY
  let lastSent = Number.NEGATIVE_INFINITY
  let latest: Figures = { label, done: start, total, start, elapsedMillis: 0 }
  let shown: Figures | undefined
  let sent: Figures | undefined
  const send = (f: Figures) => Option.isSome(sink) ? Effect.andThen(Effect.sync(() => void (sent = f)), sink.value(f)) : Effect.void
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
      if (now - lastSent >= redrawMillis) {
        lastSent = now
        yield* send(latest)
      }
      if (now - lastShown < (display === "bar" ? redrawMillis : interval)) return
      lastShown = now
      yield* show(latest)
    })
  const finish = Effect.gen(function*() {
    if (sent !== latest) yield* send(latest)
    if (shown !== latest) yield* show(latest)
    if (display === "bar") yield* Effect.sync(() => process.stderr.write("\n"))
  })
  return { update, finish } satisfies Progress
})
