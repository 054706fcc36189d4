/**
 * Flags whose values are checked as the command line is parsed: a value out
 * of range is refused with its flag named, before anything is read or
 * computed (`Invalid value for flag --batch: "-4". Expected: an integer ≥ 1`,
 * exit code 2). The commands build their numeric and list flags from these;
 * checks that need the store (a scheme against the teacher's depth) run
 * before any stage does.
 */
import { Option } from "effect"
import { Flag } from "effect/cli"
import { Scheme } from "@tinyfusion/pruning"

const checked = <A>(flag: Flag.Flag<A>, ok: (a: A) => boolean, expected: string): Flag.Flag<A> =>
  Flag.filter(flag, ok, () => expected)

/** An integer ≥ 1: steps, batch sizes, sample counts, depths and widths. */
export const count = (name: string) => checked(Flag.Int(name), (n) => n >= 1, "an integer ≥ 1")

/** An integer ≥ 0: seeds, warm-up passes, intervals where 0 means never. */
export const natural = (name: string) => checked(Flag.Int(name), (n) => n >= 0, "an integer ≥ 0")

/** A finite number > 0: learning rates, clipping norms, scale factors, thresholds. */
export const positive = (name: string) => checked(Flag.Finite(name), (x) => x > 0, "a number > 0")

/** A finite number ≥ 0: loss weights, a learning-rate floor. */
export const nonNegative = (name: string) => checked(Flag.Finite(name), (x) => x >= 0, "a number ≥ 0")

/** A share strictly between 0 and 1: a fraction of parameters removed. */
export const share = (name: string) => checked(Flag.Finite(name), (x) => x > 0 && x < 1, "a number between 0 and 1")

/** A fraction in [0, 1]: an EMA decay, a label-dropout probability. */
export const fraction = (name: string) => checked(Flag.Finite(name), (x) => x >= 0 && x <= 1, "a number in [0, 1]")

/** A guidance scale: 1 (none) or more. */
export const guidance = (name: string) => checked(Flag.Finite(name), (x) => x >= 1, "a number ≥ 1 (1: no guidance)")

/** An N:M scheme (1 ≤ N ≤ M), kept as written: `1:2`, `2:4`, `7:14`. */
export const scheme = (name: string) =>
  checked(Flag.String(name), (text) => {
    try {
      Scheme.parse(text)
      return true
    } catch {
      return false
    }
  }, "an N:M scheme with 1 ≤ N ≤ M, e.g. 1:2")

/** Comma-separated integers ≥ 0: classes; with `increasing`, distinct and in order (block indices). */
export const indices = (name: string, options: { readonly increasing: boolean }) =>
  Flag.filterMap(
    Flag.String(name),
    (text) => {
      const values = text.split(",").map((s) => (s.trim() === "" ? Number.NaN : Number(s.trim())))
      const ok = values.every((v, i) => Number.isInteger(v) && v >= 0 && (!options.increasing || i === 0 || v > values[i - 1]!))
      return ok ? Option.some(values) : Option.none()
    },
    () => `comma-separated${options.increasing ? " increasing" : ""} integers ≥ 0, e.g. 1,3,5`
  )

/** Comma-separated integers ≥ 1, at least one: depths. */
export const counts = (name: string) =>
  Flag.filterMap(
    Flag.String(name),
    (text) => {
      const values = text.split(",").map((s) => (s.trim() === "" ? Number.NaN : Number(s.trim())))
      return values.every((v) => Number.isInteger(v) && v >= 1) ? Option.some(values) : Option.none()
    },
    () => "comma-separated integers ≥ 1, e.g. 28,14"
  )

/** Comma-separated shares strictly between 0 and 1; "none" for no share. */
export const shares = (name: string) =>
  Flag.filterMap(
    Flag.String(name),
    (text) => {
      if (text.trim() === "none") return Option.some([])
      const values = text.split(",").map((s) => (s.trim() === "" ? Number.NaN : Number(s.trim())))
      return values.every((v) => v > 0 && v < 1) ? Option.some(values) : Option.none()
    },
    () => "comma-separated numbers between 0 and 1, e.g. 0.25,0.5, or none"
  )

/** Comma-separated names, each one of `known`, at least one. */
export const namesOf = (name: string, known: ReadonlyArray<string>) =>
  Flag.filterMap(
    Flag.String(name),
    (text) => {
      const names = text.split(",").map((s) => s.trim())
      return names.every((n) => known.includes(n)) ? Option.some(names) : Option.none()
    },
    () => `comma-separated names out of ${known.join(", ")}`
  )
