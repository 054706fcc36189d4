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

/** Cosine from `from` to `to` over `steps` (torch's CosineAnnealingLR with eta_min = to), constant after. */
export const cosine = (options: { readonly from: number; readonly to: number; readonly steps: number }): Schedule => (step) => {
  if (options.steps <= 0) return options.to
  const f = Math.min(Math.max(step / options.steps, 0), 1)
  return options.to + ((options.from - options.to) * (1 + Math.cos(Math.PI * f))) / 2
}

/**
 * A linear warm-up of `steps` steps in front of `after`, as MAE's and MAR's
 * util/lr_sched.py (per iteration): from 0 at step 0 to `after(0)` at
 * `steps`, then `after` shifted by the warm-up (`after(step − steps)`), so a
 * cosine after it spans the remaining steps as theirs does.
 */
export const warmup = (steps: number, after: Schedule): Schedule => (step) =>
  step < steps ? (after(0) * step) / steps : after(step - steps)
