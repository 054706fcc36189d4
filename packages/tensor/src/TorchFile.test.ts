import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Hashed from "./fixtures/Hashed.ts"
import * as TorchFile from "./TorchFile.ts"

// Written by parity/write_fixtures.py with Debian's python3-torch (torch.save, both formats).
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/torch/${name}`, import.meta.url))
const trainingCheckpoint = fileURLToPath(new URL("../../models/src/fixtures/torch/dit-train.pt", import.meta.url))

const get = (value: TorchFile.Value, key: string): TorchFile.Value => {
  if (!(value instanceof Map)) throw new Error("not a dict")
  return value.get(key) ?? null
}

const tensorAt = (file: TorchFile.TorchFile, key: string) => {
  const ref = get(file.root, key)
  if (!(ref instanceof TorchFile.TensorRef)) throw new Error(`${key} is not a tensor`)
  return file.load(ref)
}

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tolerance: number) => {
  assert.strictEqual(a.length, b.length)
  for (let i = 0; i < a.length; i++) assert.approximately(a[i]!, b[i]!, tolerance, `element ${i}`)
}

describe("TorchFile", () => {
  for (const name of ["mixed.pt", "mixed-legacy.pt"]) {
    it.effect(`${name}: dtypes, strided views of one storage, nested Python values`, () =>
      Effect.scoped(Effect.gen(function*() {
        const file = yield* TorchFile.open(fixture(name))
        const base = Hashed.values("base", 6, -1, 1)
        const f32 = yield* tensorAt(file, "f32")
        assert.deepStrictEqual(f32.shape, [2, 3])
        assert.deepStrictEqual([...f32.data], [...base])
        const transposed = yield* tensorAt(file, "transposed")
        assert.deepStrictEqual(transposed.shape, [3, 2])
        assert.deepStrictEqual([...transposed.data], [base[0]!, base[3]!, base[1]!, base[4]!, base[2]!, base[5]!])
        assert.deepStrictEqual([...(yield* tensorAt(file, "tail")).data], [...base.subarray(2, 5)])
        close((yield* tensorAt(file, "f16")).data, Hashed.values("f16", 4, -2, 2), 2e-3)
        close((yield* tensorAt(file, "bf16")).data, Hashed.values("bf16", 4, -2, 2), 1e-2)
        const f64 = yield* tensorAt(file, "f64")
        assert.deepStrictEqual([...f64.data], [Math.fround(0.1), -2.5, Infinity])
        const i64 = yield* tensorAt(file, "i64")
        assert.strictEqual(i64.dtype, "int32")
        assert.deepStrictEqual([...i64.data], [3, -4, 5])
        const big = yield* Effect.flip(tensorAt(file, "i64big"))
        assert.match(big.message, /1099511627776 of a int64 tensor does not fit/)
        assert.deepStrictEqual([...(yield* tensorAt(file, "i32")).data], [7, -8])
        assert.deepStrictEqual([...(yield* tensorAt(file, "u8")).data], [0, 255, 17])
        const scalar = yield* tensorAt(file, "scalar")
        assert.deepStrictEqual(scalar.shape, [])
        assert.deepStrictEqual([...scalar.data], [1.5])

        const meta = get(file.root, "meta")
        assert.strictEqual(get(meta, "step"), 7)
        assert.strictEqual(get(meta, "lr"), 1e-4)
        assert.strictEqual(get(meta, "name"), "tiny")
        assert.deepStrictEqual(get(meta, "flags"), [true, null, false])
        assert.strictEqual(get(meta, "big"), 2 ** 40)
        assert.strictEqual(get(meta, "neg"), -5)
        assert.deepStrictEqual(get(meta, "list"), [1, 2.5, "x"])
        const args = get(meta, "args")
        assert.instanceOf(args, TorchFile.Opaque)
        assert.strictEqual((args as TorchFile.Opaque).name, "argparse.Namespace")
        assert.strictEqual(get((args as TorchFile.Opaque).state, "model"), "DiT-XL/2")
      })))
  }

  it.effect("a train.py checkpoint: the EMA state_dict read alone, beside model, opt and args", () =>
    Effect.scoped(Effect.gen(function*() {
      const file = yield* TorchFile.open(trainingCheckpoint)
      assert.deepStrictEqual(TorchFile.entries(file.root)?.map(([k]) => k), ["model", "ema", "opt", "args", "train_steps"])
      const ema = TorchFile.stateDict(get(file.root, "ema"))!
      assert.strictEqual(ema.size, 2 * 10 + 12)
      const weights = yield* TorchFile.loadAll(file, ema)
      const qkv = weights.get("blocks.1.attn.qkv.weight")!
      assert.deepStrictEqual(qkv.shape, [48, 16])
      assert.deepStrictEqual([...qkv.data], [...Hashed.values("ema/blocks.1.attn.qkv.weight", 48 * 16, -1, 1)])
      assert.isUndefined(TorchFile.stateDict(get(file.root, "args")))
    })))

  it.effect("files that are not torch.save output fail with the path and the reason", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = yield* Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "torchfile-")))
      const text = path.join(dir, "notes.pt")
      yield* Effect.promise(() => fs.writeFile(text, "not a checkpoint\n"))
      const truncated = path.join(dir, "truncated.pt")
      const legacy = yield* Effect.promise(() => fs.readFile(fixture("mixed-legacy.pt")))
      yield* Effect.promise(() => fs.writeFile(truncated, legacy.subarray(0, legacy.length - 10)))
      const missing = yield* Effect.flip(TorchFile.open(path.join(dir, "absent.pt")))
      assert.strictEqual(missing.message, `${path.join(dir, "absent.pt")}: file not found`)
      const notTorch = yield* Effect.flip(TorchFile.open(text))
      assert.match(notTorch.message, /notes\.pt: not a PyTorch file this reader understands/)
      const cut = yield* Effect.flip(TorchFile.open(truncated))
      assert.match(cut.message, /the file ends first/)
    })))
})
