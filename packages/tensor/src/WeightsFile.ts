/**
 * A weights file as researchers download it, whatever its format:
 * safetensors (diffusers, our own files) or a torch.save file (.pt, .pth,
 * .ckpt: DiT's and SiT's releases, TinyFusion's, pytorch-fid's Inception,
 * latent-diffusion's VAE). It comes back as one state_dict of host tensors,
 * and says which dict of the file it is: a bare state_dict, or the `ema`
 * (default) or `model` entry of a training checkpoint (DiT's train.py:
 * model, ema, opt, args; MAE's and MAR's misc.save_model: model, model_ema,
 * optimizer, epoch, scaler, args), or Lightning's `state_dict`. A training
 * checkpoint's `args` (an argparse.Namespace) comes back as plain values.
 *
 * Files over 2 GiB (DiT-XL/2 is 2.7 GB) are read through a file handle, not
 * fs.readFile, and hashed in chunks.
 */
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import type { HostTensor } from "./HostTensor.ts"
import * as Safetensors from "./Safetensors.ts"
import * as TorchFile from "./TorchFile.ts"
import * as Zip from "./Zip.ts"

export class WeightsFileError extends Schema.TaggedError<WeightsFileError>()("WeightsFileError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

/** Which state_dict of a training checkpoint to read. */
export const Entry = Schema.Literals(["ema", "model"])
export type Entry = typeof Entry.Type

/** The keys each entry goes by: DiT's train.py says `ema`, MAE's and MAR's misc.save_model `model_ema`. */
const entryKeys: Readonly<Record<Entry, ReadonlyArray<string>>> = { ema: ["ema", "model_ema"], model: ["model"] }

/** A training checkpoint's argparse.Namespace: its values that are strings, numbers, booleans or None. */
export type Args = Readonly<Record<string, string | number | boolean | null>>

export interface Weights {
  readonly format: "safetensors" | "torch"
  readonly tensors: ReadonlyMap<string, HostTensor>
  /** safetensors metadata (empty for torch files). */
  readonly metadata: Readonly<Record<string, string>>
  /** Where in the file the tensors were ("the file", "entry ema of model, ema, opt, args"). */
  readonly source: string
  /** Keys of the file's dict left unread (a training checkpoint's other entries). */
  readonly unread: ReadonlyArray<string>
  /** The training checkpoint's entry read, if the state_dict is one. */
  readonly entry?: Entry
  /** The training checkpoint's `args`, if it has a Namespace there. */
  readonly args?: Args
}

const chunk = 1 << 28

/** The whole file, through a handle (fs.readFile stops at 2 GiB; typed arrays go to 4 GiB). */
export const readBytes = Effect.fn("WeightsFile.readBytes")(function*(path: string) {
  const fail = (e: unknown) =>
    new WeightsFileError({ path, reason: (e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message })
  return yield* Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(path, "r")
      try {
        const { size } = await handle.stat()
        const out = new Uint8Array(size)
        for (let at = 0; at < size;) {
          const { bytesRead } = await handle.read(out, at, Math.min(chunk, size - at), at)
          if (bytesRead === 0) throw new Error(`the file shrank to ${at} bytes while being read`)
          at += bytesRead
        }
        return out
      } finally {
        await handle.close()
      }
    },
    catch: fail
  })
})

/** sha256 of bytes of any size, in chunks. */
export const sha256 = (bytes: Uint8Array): string => {
  const hash = createHash("sha256")
  for (let at = 0; at < bytes.length; at += chunk) hash.update(bytes.subarray(at, Math.min(bytes.length, at + chunk)))
  return hash.digest("hex")
}

/** sha256 of a file, streamed. */
export const fileSha256 = Effect.fn("WeightsFile.fileSha256")(function*(path: string) {
  return yield* Effect.tryPromise({
    try: async () => {
      const hash = createHash("sha256")
      const handle = await fs.open(path, "r")
      try {
        for await (const piece of handle.createReadStream({ highWaterMark: 1 << 24 })) hash.update(piece as Buffer)
      } finally {
        await handle.close()
      }
      return hash.digest("hex")
    },
    catch: (e) => new WeightsFileError({ path, reason: (e as Error).message })
  })
})

/** Either format's answer, as the type callers see (so each format's optional fields are there). */
const listing = (l: Listing): Listing => l
const weights = (w: Weights): Weights => w

const isSafetensors = (head: Uint8Array) => head.length >= 9 && head[8] === 0x7b // "{" after the 8-byte length

/** A tensor as a file lists it, before its data is read. */
export interface Listed {
  readonly shape: ReadonlyArray<number>
  /** What reading gives: float32 for every float type, int32 for integers. */
  readonly dtype: "float32" | "int32"
}

export interface Listing extends Omit<Weights, "tensors"> {
  readonly shapes: ReadonlyMap<string, Listed>
}

const readHead = (path: string, length: number, at = 0) =>
  Effect.tryPromise({
    try: async () => {
      const handle = await fs.open(path, "r")
      try {
        const out = new Uint8Array(length)
        const { bytesRead } = await handle.read(out, 0, length, at)
        return out.subarray(0, bytesRead)
      } finally {
        await handle.close()
      }
    },
    catch: (e) =>
      new WeightsFileError({ path, reason: (e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message })
  })

const floatTypes = new Set(["F32", "F16", "BF16", "F64", "float32", "float16", "bfloat16", "float64"])

/** The state_dict a torch file's root holds (see `read`) and the checkpoint's args, or why there is none. */
const pickStateDict = (root: TorchFile.Value, entry: Entry | undefined) => {
  const bare = TorchFile.stateDict(root)
  const entries = TorchFile.entries(root)
  if (bare !== undefined && entries!.every(([, v]) => v instanceof TorchFile.TensorRef)) return { source: "the file", dict: bare, unread: [] }
  if (entries === undefined) return "the file holds no dict of tensors"
  const names = entries.map(([k]) => k)
  const order: ReadonlyArray<readonly [Entry | undefined, string]> = [
    ...(entry === undefined ? (["ema", "model"] as const) : [entry]).flatMap((e) => entryKeys[e].map((k) => [e, k] as const)),
    ...(entry === undefined ? [[undefined, "state_dict"] as const] : [])
  ]
  for (const [picked, name] of order) {
    const dict = TorchFile.stateDict(entries.find(([k]) => k === name)?.[1] ?? null)
    if (dict === undefined) continue
    const args = argsOf(entries.find(([k]) => k === "args")?.[1] ?? null)
    return {
      source: `entry ${name} of ${names.join(", ")}`,
      dict,
      unread: names.filter((k) => k !== name),
      ...(picked === undefined ? {} : { entry: picked }),
      ...(args === undefined ? {} : { args })
    }
  }
  return `no state_dict under ${order.map(([, k]) => k).join(" or ")} (the file's dict holds ${names.join(", ")})`
}

const argsOf = (value: TorchFile.Value): Args | undefined => {
  if (!(value instanceof TorchFile.Opaque) || value.name !== "argparse.Namespace") return undefined
  const fields = TorchFile.entries(value.state)
  if (fields === undefined) return undefined
  const plain = (v: TorchFile.Value): v is string | number | boolean | null =>
    v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean"
  return Object.fromEntries(fields.filter((f): f is readonly [string, string | number | boolean | null] => plain(f[1])))
}

/**
 * Lists a weights file's state_dict — keys, shapes, where it is — without
 * reading tensor data: the header of a safetensors file, the pickle of a
 * torch file. What up-front checks of large files use.
 */
export const inspect = Effect.fn("WeightsFile.inspect")(function*(path: string, options: { readonly entry?: Entry } = {}) {
  const fail = (reason: string) => new WeightsFileError({ path, reason })
  const head = yield* readHead(path, 16)
  if (isSafetensors(head) && !Zip.isZip(head)) {
    const length = Number(new DataView(head.buffer, head.byteOffset).getBigUint64(0, true))
    const text = yield* readHead(path, length, 8)
    const header = yield* Effect.try({
      try: () => JSON.parse(new TextDecoder().decode(text)) as Record<string, { dtype: string; shape: Array<number> } | Record<string, string>>,
      catch: () => fail("not safetensors: the header is not JSON")
    })
    const shapes = new Map<string, Listed>()
    for (const [name, entry] of Object.entries(header)) {
      if (name === "__metadata__") continue
      const { dtype, shape } = entry as { dtype: string; shape: Array<number> }
      shapes.set(name, { shape, dtype: floatTypes.has(dtype) ? "float32" : "int32" })
    }
    const metadata = (header["__metadata__"] ?? {}) as Record<string, string>
    return listing({ format: "safetensors", shapes, metadata, source: "the file", unread: [] })
  }
  return yield* Effect.scoped(Effect.gen(function*() {
    const file = yield* TorchFile.open(path).pipe(Effect.mapError((e) => fail(e.reason)))
    const picked = pickStateDict(file.root, options.entry)
    if (typeof picked === "string") return yield* fail(picked)
    const { dict, ...where } = picked
    const shapes = new Map([...dict].map(([k, t]) => [k, { shape: t.shape, dtype: floatTypes.has(t.dtype) ? "float32" : "int32" } as const]))
    return listing({ format: "torch", shapes, metadata: {}, ...where })
  }))
})

/** Reads a weights file; `entry` picks a training checkpoint's state_dict (default: ema when present). */
export const read = Effect.fn("WeightsFile.read")(function*(path: string, options: { readonly entry?: Entry } = {}) {
  const fail = (reason: string) => new WeightsFileError({ path, reason })
  const head = yield* readHead(path, 16)
  if (isSafetensors(head) && !Zip.isZip(head)) {
    const file = yield* Safetensors.decode(yield* readBytes(path)).pipe(Effect.mapError((e) => fail(e.reason)))
    return weights({ format: "safetensors", tensors: file.tensors, metadata: file.metadata, source: "the file", unread: [] })
  }
  return yield* Effect.scoped(Effect.gen(function*() {
    const file = yield* TorchFile.open(path).pipe(Effect.mapError((e) => fail(e.reason)))
    const picked = pickStateDict(file.root, options.entry)
    if (typeof picked === "string") return yield* fail(picked)
    const { dict, ...where } = picked
    const tensors = yield* TorchFile.loadAll(file, dict).pipe(Effect.mapError((e) => fail(e.reason)))
    return weights({ format: "torch", tensors, metadata: {}, ...where })
  }))
})
