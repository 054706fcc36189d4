/**
 * Values annealed over steps: learning rates, Gumbel temperature τ, the RepKD
 * weight β. A schedule is a plain function of the step.
 */
export type Schedule = (step: number) => number

export const constant = (value: number): Schedule => () => value

/** Linear from `from` at step 0 to `to` at `steps`, constant after. */
export const linear = (options: { readonly from: number; readonly to: number; readonly steps: number }): Schedule =>
(step) => {
  if (options.steps <= 0) return options.to
  const f = Math.min(Math.max(step / options.steps, 0), 1)
  return options.from + (options.to - options.from) * f
}

/**
 * Cosine from `from` to `to` over `steps` (torch's CosineAnnealingLR with
 * eta_min = to), after an optional linear warm-up from 0; constant after.
 */
export const cosine = (
  options: { readonly from: number; readonly to: number; readonly steps: number; readonly warmup?: number }
): Schedule =>
(step) => {
  const warmup = options.warmup ?? 0
  if (step < warmup) return (options.from * (step + 1)) / warmup
  const span = options.steps - warmup
  if (span <= 0) return options.to
  const f = Math.min((step - warmup) / span, 1)
  return options.to + ((options.from - options.to) * (1 + Math.cos(Math.PI * f))) / 2
}
