/**
 * Timestep respacing, as DiT's space_timesteps: "250" keeps 250 of the 1000
 * steps evenly (rounded as Python's round, half to even); "10,15,20" splits
 * the steps into three equal sections and keeps that many of each; "ddim50"
 * keeps every k-th step for the integer stride k that gives exactly 50; ""
 * keeps all of them.
 */
import { Schema } from "effect"

export class InvalidRespacing extends Schema.TaggedError<InvalidRespacing>()("InvalidRespacing", {
  respacing: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid timestep respacing "${this.respacing}": ${this.reason}`
  }
}

/** Python 3's round(): to nearest, ties to even. */
export const pythonRound = (x: number): number => {
  const r = Math.round(x)
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r
}

/** The kept original timesteps, ascending. Throws InvalidRespacing. */
export function spaceTimesteps(numTimesteps: number, respacing: string): ReadonlyArray<number> {
  const text = respacing.trim()
  const fail = (reason: string) => new InvalidRespacing({ respacing, reason })
  if (text === "") return Array.from({ length: numTimesteps }, (_, i) => i)
  if (text.startsWith("ddim")) {
    const desired = Number(text.slice(4))
    if (!Number.isInteger(desired) || desired < 1) throw fail("expected ddimN with a positive integer N")
    for (let stride = 1; stride < numTimesteps; stride++) {
      if (Math.ceil(numTimesteps / stride) === desired) return Array.from({ length: desired }, (_, i) => i * stride)
    }
    throw fail(`cannot create exactly ${desired} steps with an integer stride`)
  }
  const sections = text.split(",").map((s) => Number(s.trim()))
  if (sections.some((n) => !Number.isInteger(n) || n < 0)) throw fail("expected a count or comma-separated counts, e.g. 250 or 10,15,20")
  const sizePer = Math.floor(numTimesteps / sections.length)
  const extra = numTimesteps % sections.length
  const kept = new Set<number>()
  let start = 0
  sections.forEach((count, i) => {
    const size = sizePer + (i < extra ? 1 : 0)
    if (size < count) throw fail(`cannot divide a section of ${size} steps into ${count}`)
    const stride = count <= 1 ? 1 : (size - 1) / (count - 1)
    let at = 0
    for (let k = 0; k < count; k++) {
      kept.add(start + pythonRound(at))
      at += stride
    }
    start += size
  })
  if (kept.size === 0) throw fail("keeps no timestep; sample with at least one")
  return [...kept].sort((a, b) => a - b)
}
