/**
 * PyTorch's `torch.save` files (.pt, .pth, .ckpt), read without Python:
 *
 *   zip format (torch ≥ 1.6)  <name>/data.pkl is the pickled object; each
 *                             tensor's storage is the entry <name>/data/<key>
 *   legacy format             pickles of a magic number, the protocol, system
 *                             info and the object, then the storage keys, then
 *                             each storage as an int64 element count and its bytes
 *
 * The pickle is read by a restricted unpickler that never runs code: tensors
 * (`torch._utils._rebuild_tensor_v2`, storages, parameters), dicts and
 * OrderedDicts, lists, tuples, sets, numbers, strings and bytes become values;
 * any other class (an `argparse.Namespace` of training args, optimiser
 * internals) becomes an inert `Opaque` record of its name and arguments. A
 * tensor is a reference to its storage until `load` reads it, so a training
 * checkpoint's EMA weights are read without its model, optimiser moments or
 * anything else.
 */
import { Effect, Schema, type Scope } from "effect"
import * as fs from "node:fs/promises"
import { float32, type HostTensor, int32, numel } from "./HostTensor.ts"
import * as Zip from "./Zip.ts"

export class TorchFileError extends Schema.TaggedError<TorchFileError>()("TorchFileError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

export type Dtype = "float32" | "float16" | "bfloat16" | "float64" | "int64" | "int32" | "int16" | "int8" | "uint8" | "bool"

const storageTypes: Record<string, Dtype> = {
  FloatStorage: "float32",
  HalfStorage: "float16",
  BFloat16Storage: "bfloat16",
  DoubleStorage: "float64",
  LongStorage: "int64",
  IntStorage: "int32",
  ShortStorage: "int16",
  CharStorage: "int8",
  ByteStorage: "uint8",
  BoolStorage: "bool"
}

const bytesPer: Record<Dtype, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  float64: 8,
  int64: 8,
  int32: 4,
  int16: 2,
  int8: 1,
  uint8: 1,
  bool: 1
}

export interface Storage {
  readonly key: string
  readonly dtype: Dtype
  readonly numel: number
}

/** A tensor as the pickle describes it: a strided view of a storage. */
export class TensorRef {
  readonly _tag = "TensorRef"
  readonly storage: Storage
  readonly offset: number
  readonly shape: ReadonlyArray<number>
  readonly stride: ReadonlyArray<number>
  constructor(storage: Storage, offset: number, shape: ReadonlyArray<number>, stride: ReadonlyArray<number>) {
    this.storage = storage
    this.offset = offset
    this.shape = shape
    this.stride = stride
  }
  get dtype(): Dtype {
    return this.storage.dtype
  }
}

/** An instance of a class the reader does not build (kept as its name, arguments and state). */
export class Opaque {
  readonly _tag = "Opaque"
  readonly name: string
  readonly args: ReadonlyArray<Value>
  /** What BUILD set (an instance's __dict__, usually). */
  state: Value = null
  constructor(name: string, args: ReadonlyArray<Value>) {
    this.name = name
    this.args = args
  }
}

/** A Python dict (keys in insertion order). */
export type Dict = Map<Value, Value>

export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | ReadonlyArray<Value>
  | Dict
  | Set<Value>
  | TensorRef
  | Opaque
  | Global
  | StorageValue

/** A class or function a pickle names (module.name). */
class Global {
  readonly _tag = "Global"
  readonly name: string
  constructor(name: string) {
    this.name = name
  }
}

export interface TorchFile {
  readonly path: string
  /** The object torch.save was given. */
  readonly root: Value
  /** Reads a tensor's values: floats as float32 (half and bfloat16 widen exactly), integers as int32. */
  readonly load: (tensor: TensorRef) => Effect.Effect<HostTensor, TorchFileError>
}

/**
 * Runs a pickle program. `persistent` turns a persistent id (PyTorch's storage
 * tuples) into a value. Returns the value and the offset after STOP.
 */
export function unpickle(
  bytes: Uint8Array,
  start: number,
  persistent: (id: Value) => Value
): { readonly value: Value; readonly end: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const text = new TextDecoder()
  const stack: Array<Value> = []
  const marks: Array<number> = []
  const memo = new Map<number, Value>()
  let at = start
  const need = (n: number) => {
    if (at + n > bytes.length) throw new Error(`pickle ends inside an instruction at byte ${at}`)
  }
  const u8 = () => (need(1), bytes[at++]!)
  const u16 = () => (need(2), (at += 2), view.getUint16(at - 2, true))
  const u32 = () => (need(4), (at += 4), view.getUint32(at - 4, true))
  const i32 = () => (need(4), (at += 4), view.getInt32(at - 4, true))
  const u64 = () => (need(8), (at += 8), Number(view.getBigUint64(at - 8, true)))
  const raw = (n: number) => (need(n), (at += n), bytes.subarray(at - n, at))
  const line = () => {
    const end = bytes.indexOf(0x0a, at)
    if (end < 0) throw new Error("pickle ends inside a text line")
    const s = text.decode(bytes.subarray(at, end))
    at = end + 1
    return s
  }
  const pop = (): Value => {
    if (stack.length <= (marks[marks.length - 1] ?? 0)) throw new Error("pickle stack underflow")
    return stack.pop()!
  }
  const popMark = (): Array<Value> => {
    const from = marks.pop()
    if (from === undefined) throw new Error("pickle has no MARK to pop to")
    return stack.splice(from)
  }
  const top = (): Value => {
    if (stack.length <= (marks[marks.length - 1] ?? 0)) throw new Error("pickle stack underflow")
    return stack[stack.length - 1]!
  }
  const long = (b: Uint8Array): number | bigint => {
    let v = 0n
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!)
    if (b.length > 0 && b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length)
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v
  }
  const setItems = (target: Value, items: ReadonlyArray<Value>) => {
    if (!(target instanceof Map)) throw new Error("SETITEMS on a value that is not a dict")
    for (let i = 0; i + 1 < items.length; i += 2) target.set(items[i]!, items[i + 1]!)
  }
  const append = (target: Value, items: ReadonlyArray<Value>) => {
    if (Array.isArray(target)) (target as Array<Value>).push(...items)
    else if (target instanceof Set) items.forEach((v) => target.add(v))
    else throw new Error("APPEND on a value that is not a list")
  }
  for (;;) {
    const op = u8()
    switch (op) {
      case 0x80: // PROTO
        u8()
        break
      case 0x95: // FRAME
        u64()
        break
      case 0x2e: // STOP
        return { value: pop(), end: at }
      case 0x28: // MARK
        marks.push(stack.length)
        break
      case 0x7d: // EMPTY_DICT
        stack.push(new Map())
        break
      case 0x5d: // EMPTY_LIST
        stack.push([])
        break
      case 0x29: // EMPTY_TUPLE
        stack.push([])
        break
      case 0x8f: // EMPTY_SET
        stack.push(new Set())
        break
      case 0x64: { // DICT
        const d = new Map<Value, Value>()
        setItems(d, popMark())
        stack.push(d)
        break
      }
      case 0x6c: // LIST
      case 0x74: // TUPLE
        stack.push(popMark())
        break
      case 0x85: // TUPLE1
        stack.push([pop()])
        break
      case 0x86: { // TUPLE2
        const b = pop()
        stack.push([pop(), b])
        break
      }
      case 0x87: { // TUPLE3
        const c = pop()
        const b = pop()
        stack.push([pop(), b, c])
        break
      }
      case 0x73: { // SETITEM
        const v = pop()
        const k = pop()
        setItems(top(), [k, v])
        break
      }
      case 0x75: { // SETITEMS
        const items = popMark()
        setItems(top(), items)
        break
      }
      case 0x61: { // APPEND
        const v = pop()
        append(top(), [v])
        break
      }
      case 0x65: { // APPENDS
        const items = popMark()
        append(top(), items)
        break
      }
      case 0x90: { // ADDITEMS
        const items = popMark()
        append(top(), items)
        break
      }
      case 0x71: // BINPUT
        memo.set(u8(), top())
        break
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top())
        break
      case 0x94: // MEMOIZE
        memo.set(memo.size, top())
        break
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const index = op === 0x68 ? u8() : u32()
        if (!memo.has(index)) throw new Error(`memo entry ${index} was never stored`)
        stack.push(memo.get(index)!)
        break
      }
      case 0x30: // POP
        if (marks[marks.length - 1] === stack.length) marks.pop()
        else pop()
        break
      case 0x31: // POP_MARK
        popMark()
        break
      case 0x32: // DUP
        stack.push(top())
        break
      case 0x4e: // NONE
        stack.push(null)
        break
      case 0x88: // NEWTRUE
        stack.push(true)
        break
      case 0x89: // NEWFALSE
        stack.push(false)
        break
      case 0x4b: // BININT1
        stack.push(u8())
        break
      case 0x4d: // BININT2
        stack.push(u16())
        break
      case 0x4a: // BININT
        stack.push(i32())
        break
      case 0x8a: // LONG1
        stack.push(long(raw(u8())))
        break
      case 0x8b: // LONG4
        stack.push(long(raw(u32())))
        break
      case 0x47: // BINFLOAT
        need(8)
        stack.push(view.getFloat64(at, false))
        at += 8
        break
      case 0x58: // BINUNICODE
        stack.push(text.decode(raw(u32())))
        break
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text.decode(raw(u8())))
        break
      case 0x8d: // BINUNICODE8
        stack.push(text.decode(raw(u64())))
        break
      case 0x55: // SHORT_BINSTRING
        stack.push(latin1(raw(u8())))
        break
      case 0x54: // BINSTRING
        stack.push(latin1(raw(u32())))
        break
      case 0x43: // SHORT_BINBYTES
        stack.push(raw(u8()).slice())
        break
      case 0x42: // BINBYTES
        stack.push(raw(u32()).slice())
        break
      case 0x8e: // BINBYTES8
        stack.push(raw(u64()).slice())
        break
      case 0x63: { // GLOBAL
        const module = line()
        stack.push(new Global(`${module}.${line()}`))
        break
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop()
        stack.push(new Global(`${String(pop())}.${String(name)}`))
        break
      }
      case 0x51: // BINPERSID
        stack.push(persistent(pop()))
        break
      case 0x52: { // REDUCE
        const args = pop()
        stack.push(reduce(pop(), Array.isArray(args) ? args : [args]))
        break
      }
      case 0x81: { // NEWOBJ
        const args = pop()
        stack.push(reduce(pop(), Array.isArray(args) ? args : [args]))
        break
      }
      case 0x62: { // BUILD
        const state = pop()
        const target = top()
        if (target instanceof Opaque) target.state = state
        break
      }
      default:
        throw new Error(`unsupported pickle opcode 0x${op.toString(16)} at byte ${at - 1}`)
    }
  }
}

const latin1 = (b: Uint8Array) => Array.from(b, (c) => String.fromCharCode(c)).join("")

/** What calling a global with arguments gives, for the globals a checkpoint uses; anything else is Opaque. */
function reduce(callable: Value, args: ReadonlyArray<Value>): Value {
  if (!(callable instanceof Global)) throw new Error("REDUCE of a value that is not a class or function")
  switch (callable.name) {
    case "collections.OrderedDict":
    case "builtins.dict":
    case "__builtin__.dict":
      return new Map()
    case "builtins.set":
    case "__builtin__.set":
      return new Set(Array.isArray(args[0]) ? args[0] : [])
    case "_codecs.encode":
      return Uint8Array.from(String(args[0]), (c) => c.charCodeAt(0))
    case "torch._utils._rebuild_tensor":
    case "torch._utils._rebuild_tensor_v2": {
      const [storage, offset, shape, stride] = args
      if (!(storage instanceof StorageValue)) throw new Error("a tensor without a storage")
      return new TensorRef(storage.storage, Number(offset), (shape as Array<number>).map(Number), (stride as Array<number>).map(Number))
    }
    case "torch._utils._rebuild_parameter":
    case "torch._utils._rebuild_parameter_with_state":
      return args[0]!
    default:
      return new Opaque(callable.name, args)
  }
}

/** A storage named by a persistent id. */
class StorageValue {
  readonly _tag = "Storage"
  readonly storage: Storage
  constructor(storage: Storage) {
    this.storage = storage
  }
}

/** The storage dtype a persistent id's type names (torch.FloatStorage, or torch.float32 in newer files). */
const dtypeOf = (type: Value): Dtype => {
  const name = type instanceof Global ? type.name.replace(/^torch\./, "") : String(type)
  const dtype = storageTypes[name] ?? (name in bytesPer ? (name as Dtype) : undefined)
  if (dtype === undefined) throw new Error(`unsupported storage type ${name}`)
  return dtype
}

/** ('storage', type, key, location, numel[, view metadata]) → a storage, recorded in `seen`. */
const storageOf = (seen: Map<string, Storage>) => (id: Value): Value => {
  if (!Array.isArray(id) || id[0] !== "storage") throw new Error(`unknown persistent id ${String(id)}`)
  const [, type, key, , size, view] = id as ReadonlyArray<Value>
  if (view !== undefined && view !== null) throw new Error("storage views of the legacy format (torch < 0.4) are not supported")
  const storage = { key: String(key), dtype: dtypeOf(type!), numel: Number(size) }
  seen.set(storage.key, storage)
  return new StorageValue(storage)
}

/** A strided view of a storage's bytes, as a contiguous host tensor. */
export function materialise(tensor: TensorRef, data: Uint8Array): HostTensor {
  const dtype = tensor.dtype
  const per = bytesPer[dtype]
  const n = numel(tensor.shape)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const read: (i: number) => number = {
    float32: (i: number) => view.getFloat32(i * 4, true),
    float64: (i: number) => view.getFloat64(i * 8, true),
    float16: (i: number) => f16(view.getUint16(i * 2, true)),
    bfloat16: (i: number) => {
      scratch.setUint32(0, view.getUint16(i * 2, true) << 16, true)
      return scratch.getFloat32(0, true)
    },
    int64: (i: number) => Number(view.getBigInt64(i * 8, true)),
    int32: (i: number) => view.getInt32(i * 4, true),
    int16: (i: number) => view.getInt16(i * 2, true),
    int8: (i: number) => view.getInt8(i),
    uint8: (i: number) => view.getUint8(i),
    bool: (i: number) => view.getUint8(i)
  }[dtype]
  const float = dtype === "float32" || dtype === "float16" || dtype === "bfloat16" || dtype === "float64"
  const out = float ? new Float32Array(n) : new Int32Array(n)
  const rank = tensor.shape.length
  const index = new Array<number>(rank).fill(0)
  let source = tensor.offset
  const last = (tensor.offset + tensor.shape.reduce((s, d, k) => s + (d - 1) * tensor.stride[k]!, 0) + 1) * per
  if (n > 0 && last > data.byteLength) throw new Error(`the tensor reaches byte ${last} of a ${data.byteLength}-byte storage`)
  for (let i = 0; i < n; i++) {
    const v = read(source)
    if (!float && (v < -(2 ** 31) || v >= 2 ** 31)) throw new Error(`value ${v} of a ${dtype} tensor does not fit the int32 it is read as`)
    out[i] = v
    for (let k = rank - 1; k >= 0; k--) {
      index[k]!++
      source += tensor.stride[k]!
      if (index[k]! < tensor.shape[k]!) break
      source -= tensor.stride[k]! * tensor.shape[k]!
      index[k] = 0
    }
  }
  return float ? float32(tensor.shape, out as Float32Array) : int32(tensor.shape, out as Int32Array)
}

const scratch = new DataView(new ArrayBuffer(4))

const f16 = (h: number): number => {
  const sign = h & 0x8000 ? -1 : 1
  const exponent = (h >> 10) & 0x1f
  const fraction = h & 0x3ff
  if (exponent === 0) return sign * fraction * 2 ** -24
  if (exponent === 31) return fraction === 0 ? sign * Infinity : NaN
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15)
}

/** 0x1950a86a20f9469cfc6c: the legacy format's first pickle. */
const legacyMagic = 0x1950a86a20f9469cfc6cn

/**
 * Opens a torch.save file of either format. The zip format is read lazily
 * (storages on `load`); the legacy format, sequential by design, is read at
 * once (pytorch-fid's Inception weights are such a file, 95 MB).
 */
export const open = Effect.fn("TorchFile.open")(function*(path: string): Effect.fn.Return<TorchFile, TorchFileError, Scope.Scope> {
  const fail = (reason: string) => new TorchFileError({ path, reason })
  const handle = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () => fs.open(path, "r"),
      catch: (e) => fail((e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message)
    }),
    (h) => Effect.promise(() => h.close())
  )
  const head = new Uint8Array(4)
  yield* Effect.tryPromise({ try: () => handle.read(head, 0, 4, 0), catch: (e) => fail((e as Error).message) })
  const attempt = <A>(f: () => A) => Effect.try({ try: f, catch: (e) => fail(`not a PyTorch file this reader understands: ${(e as Error).message}`) })

  if (Zip.isZip(head)) {
    const archive = yield* Zip.open(path).pipe(Effect.mapError((e) => fail(e.reason)))
    const pickle = archive.names.find((n) => n.endsWith("/data.pkl") && n.split("/").length === 2)
    if (pickle === undefined) return yield* fail("a zip archive without <name>/data.pkl: not a torch.save file")
    const prefix = pickle.slice(0, -"data.pkl".length)
    const order = archive.names.includes(`${prefix}byteorder`) ? new TextDecoder().decode(yield* archive.read(`${prefix}byteorder`).pipe(Effect.mapError((e) => fail(e.reason)))) : "little"
    if (order.trim() !== "little") return yield* fail(`storages are ${order.trim()}-endian; only little-endian files are read`)
    const bytes = yield* archive.read(pickle).pipe(Effect.mapError((e) => fail(e.reason)))
    const { value } = yield* attempt(() => unpickle(bytes, 0, storageOf(new Map())))
    return {
      path,
      root: value,
      load: (tensor) =>
        archive.read(`${prefix}data/${tensor.storage.key}`).pipe(
          Effect.mapError((e) => fail(e.reason)),
          Effect.flatMap((data) => attempt(() => materialise(tensor, data)))
        )
    } satisfies TorchFile
  }

  const stat = yield* Effect.tryPromise({ try: () => handle.stat(), catch: (e) => fail((e as Error).message) })
  if (stat.size > 2 ** 31 - 1) return yield* fail("a legacy-format (torch < 1.6) file over 2 GiB; re-save it with a current torch.save")
  const bytes = yield* Effect.tryPromise({ try: () => handle.readFile(), catch: (e) => fail((e as Error).message) })
  const file = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  return yield* attempt(() => {
    const none = (): Value => {
      throw new Error("a persistent id outside the object pickle")
    }
    const magic = unpickle(file, 0, none)
    if (BigInt(magic.value as number | bigint) !== legacyMagic) throw new Error("neither a zip archive nor the legacy format's magic number")
    const protocol = unpickle(file, magic.end, none)
    if (protocol.value !== 1001) throw new Error(`legacy protocol ${String(protocol.value)}, expected 1001`)
    const info = unpickle(file, protocol.end, none)
    const seen = new Map<string, Storage>()
    const object = unpickle(file, info.end, storageOf(seen))
    const keys = unpickle(file, object.end, none)
    if (!Array.isArray(keys.value)) throw new Error("the storage key list is not a list")
    const storages = new Map<string, Uint8Array>()
    const view = new DataView(file.buffer, file.byteOffset, file.byteLength)
    let at = keys.end
    for (const k of keys.value as ReadonlyArray<Value>) {
      const storage = seen.get(String(k))
      if (storage === undefined) throw new Error(`storage ${String(k)} is listed but no tensor uses it`)
      if (at + 8 > file.length) throw new Error(`storage ${storage.key} is missing: the file ends`)
      const length = Number(view.getBigInt64(at, true)) * bytesPer[storage.dtype]
      at += 8
      if (at + length > file.length) throw new Error(`storage ${storage.key} needs ${length} bytes, the file ends first`)
      storages.set(storage.key, file.subarray(at, at + length))
      at += length
    }
    return {
      path,
      root: object.value,
      load: (tensor) =>
        Effect.suspend(() => {
          const data = storages.get(tensor.storage.key)
          return data === undefined ? Effect.fail(fail(`storage ${tensor.storage.key} is not in the file`)) : attempt(() => materialise(tensor, data))
        })
    } satisfies TorchFile
  })
})

/** The keys of a dict value as strings, if it is a dict with string keys only. */
export const entries = (value: Value): ReadonlyArray<readonly [string, Value]> | undefined =>
  value instanceof Map && [...value.keys()].every((k) => typeof k === "string") ? [...value].map(([k, v]) => [k as string, v] as const) : undefined

/** A dict of tensors (a state_dict) as a map, or undefined when `value` is not one. Non-tensor entries are skipped. */
export const stateDict = (value: Value): ReadonlyMap<string, TensorRef> | undefined => {
  const items = entries(value)
  if (items === undefined) return undefined
  const tensors = items.filter((e): e is readonly [string, TensorRef] => e[1] instanceof TensorRef)
  return tensors.length === 0 ? undefined : new Map(tensors)
}

/** Reads every tensor of a state_dict. */
export const loadAll = Effect.fn("TorchFile.loadAll")(function*(file: TorchFile, tensors: ReadonlyMap<string, TensorRef>) {
  const out = new Map<string, HostTensor>()
  for (const [k, t] of tensors) out.set(k, yield* file.load(t))
  return out
})
