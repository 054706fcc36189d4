/**
 * The flags of self-describing methods (core Method: pruners, recovery
 * strategies): every option of every method becomes an optional flag, its
 * name the option's in kebab case and its help the option's description and
 * default, so a method added as one file brings its flags. A value that is
 * JSON (a number, an array, true) is read as JSON, any other as text. The
 * option's Schema checks it as the command line is parsed (as CheckedFlags
 * do for the commands' own flags); the chosen method's options Schema then
 * decodes them all, filling in defaults.
 */
import { Effect, Option, Schema } from "effect"
import { Flag } from "effect/cli"
import { Method } from "@tinyfusion/core"

const kebab = (name: string) => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)

/** A flag given for an option the chosen method does not have. */
export class NotAnOption extends Schema.TaggedError<NotAnOption>()("NotAnOption", {
  flag: Schema.String,
  kind: Schema.String,
  method: Schema.String,
  options: Schema.Array(Schema.String)
}) {
  override get message(): string {
    const own = this.options.length === 0 ? "it takes none" : `its options: ${this.options.join(", ")}`
    return `${this.flag} is not an option of ${this.kind} ${this.method}; ${own}`
  }
}

const value = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** Why `text` is no value of the option `name` under any of `fields` (undefined: it is one). */
const refusal = (name: string, fields: ReadonlyArray<Schema.Struct.Fields[string]>, text: string): string | undefined => {
  const reasons: Array<string> = []
  for (const field of fields) {
    // An option alone, as its method's options Schema has it (a default filled in, a filter checked).
    const alone = Schema.Struct({ [name]: field }) as unknown as Schema.Codec<unknown, unknown>
    const decoded = Schema.decodeUnknownResult(alone)({ [name]: value(text) })
    if (decoded._tag === "Success") return undefined
    const reason = decoded.failure.message.replace(/\s*\n\s*/g, " ").replace(/ at \[[^\]]*\]$/, "").replace(/^Expected /, "")
    if (!reasons.includes(reason)) reasons.push(reason)
  }
  return `${reasons.join(", or ")} (the option ${name})`
}

/**
 * One optional flag per option name across `methods`, keyed by the option's
 * name, checked as the command line is parsed: a value no method's option
 * of that name accepts is refused there (exit 2), before anything is read.
 */
export const flags = (methods: ReadonlyArray<Method.Any>, reserved: ReadonlyArray<string>): Record<string, Flag.Flag<Option.Option<string>>> => {
  const help = new Map<string, Array<string>>()
  const fields = new Map<string, Array<Schema.Struct.Fields[string]>>()
  for (const method of methods) {
    for (const option of Method.describeOptions(method)) {
      const flag = kebab(option.name)
      if (reserved.includes(flag)) throw new Error(`option ${option.name} of ${method.name} would shadow the command's --${flag}`)
      const given = option.default === undefined ? "required" : `default ${JSON.stringify(option.default)}`
      const line = `${method.name}: ${option.description ?? option.name} (${given})`
      help.set(option.name, [...(help.get(option.name) ?? []), line])
      fields.set(option.name, [...(fields.get(option.name) ?? []), method.options.fields[option.name]!])
    }
  }
  return Object.fromEntries(
    [...help].map(([name, lines]) => [
      name,
      Flag.String(kebab(name)).pipe(
        Flag.filter((text) => refusal(name, fields.get(name)!, text) === undefined, (text) => refusal(name, fields.get(name)!, text)!),
        Flag.withDescription(lines.join("; ")),
        Flag.optional
      )
    ])
  )
}

/** The options given as flags for `method` (those it has; any other given is named as not its). */
export const given = (kind: string, method: Method.Any, flagged: Readonly<Record<string, Option.Option<string>>>) =>
  Effect.gen(function*() {
    const own = Object.keys(method.options.fields)
    const options: Record<string, unknown> = {}
    for (const [name, text] of Object.entries(flagged)) {
      if (Option.isNone(text)) continue
      if (!own.includes(name)) {
        return yield* new NotAnOption({ flag: `--${kebab(name)}`, kind, method: method.name, options: own.map((o) => `--${kebab(o)}`) })
      }
      options[name] = value(text.value)
    }
    return options
  })
