import { assert, describe, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import { HostTensor, ParamTree, Safetensors } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import * as Config from "./Config.ts"
import * as Init from "./Init.ts"
import * as Fixtures from "./fixtures/Tiny.ts"

const tiny: Config.Config = Fixtures.tiny

/** The state_dict keys of SPEC.md, written out from its list. */
const specKeys = (depth: number): Array<string> => {
  const wb = (m: string) => [`${m}.weight`, `${m}.bias`]
  return [
    "pos_embed",
    ...wb("x_embedder.proj"),
    ...wb("t_embedder.mlp.0"),
    ...wb("t_embedder.mlp.2"),
    "y_embedder.embedding_table.weight",
    ...Array.from({ length: depth }, (_, i) =>
      ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"].flatMap((m) => wb(`blocks.${i}.${m}`))).flat(),
    ...wb("final_layer.linear"),
    ...wb("final_layer.adaLN_modulation.1")
  ]
}

/** The tensor names in a safetensors header, read without our decoder. */
const headerKeys = (bytes: Uint8Array): Array<string> => {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true))
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) as Record<string, unknown>
  return Object.keys(header).filter((k) => k !== "__metadata__")
}

const flat = (tree: HostTensor.HostTree) => new Map(ParamTree.flatten(tree, HostTensor.isHostTensor))

describe("StateDict", () => {
  it("reference keys and shapes: SPEC.md's list; DiT-XL/2 has the reference's 675,129,632 parameters", () => {
    for (const depth of [1, 3, 28]) {
      assert.deepStrictEqual(StateDict.referenceShapes({ ...tiny, depth }).map(([k]) => k), specKeys(depth))
    }
    const count = (c: Config.Config) => StateDict.referenceShapes(c).reduce((n, [, s]) => n + HostTensor.numel(s), 0)
    assert.strictEqual(count(Config.presets["DiT-XL/2"]), 675_129_632)
    const shapes = new Map(StateDict.referenceShapes(Config.presets["DiT-XL/2"]))
    assert.deepStrictEqual(shapes.get("x_embedder.proj.weight"), [1152, 4, 2, 2])
    assert.deepStrictEqual(shapes.get("y_embedder.embedding_table.weight"), [1001, 1152])
    assert.deepStrictEqual(shapes.get("final_layer.linear.weight"), [32, 1152])
    assert.deepStrictEqual(shapes.get("blocks.27.mlp.fc1.weight"), [4608, 1152])
  })

  it.effect("export → import is bit-exact and the file lists exactly the reference keys", () =>
    Effect.gen(function*() {
      const params = Init.host(tiny, 11)
      const bytes = yield* StateDict.encode(tiny, params)
      assert.deepStrictEqual(headerKeys(bytes).sort(), specKeys(3).sort())
      const loaded = yield* StateDict.decode(tiny, bytes)
      assert.deepStrictEqual(loaded.dtypes, ["F32"])
      const a = flat(params)
      const b = flat(loaded.params)
      assert.deepStrictEqual([...b.keys()], [...a.keys()])
      for (const [k, t] of a) assert.isTrue(HostTensor.bitEqual(t, b.get(k)!), k)
      assert.deepStrictEqual(Option.getOrThrow(yield* StateDict.storedConfig(loaded.metadata)), tiny)
      // Writing what was read gives the same bytes.
      assert.deepStrictEqual(yield* StateDict.encode(tiny, loaded.params), bytes)
    }))

  it.effect("a width-pruned config: the reference keys with narrower shapes, export → import bit-exact, widths in the metadata", () =>
    Effect.gen(function*() {
      const narrow: Config.Config = { ...tiny, numHeads: 3, headDim: 5, mlpHidden: 7 }
      const shapes = new Map(StateDict.referenceShapes(narrow))
      assert.deepStrictEqual([...shapes.keys()], specKeys(3))
      assert.deepStrictEqual(shapes.get("blocks.0.attn.qkv.weight"), [45, 8])
      assert.deepStrictEqual(shapes.get("blocks.0.attn.proj.weight"), [8, 15])
      assert.deepStrictEqual(shapes.get("blocks.2.mlp.fc1.weight"), [7, 8])
      assert.deepStrictEqual(shapes.get("blocks.2.mlp.fc2.weight"), [8, 7])
      const params = Init.host(narrow, 14)
      const bytes = yield* StateDict.encode(narrow, params)
      const loaded = yield* StateDict.decode(narrow, bytes)
      for (const [k, t] of flat(params)) assert.isTrue(HostTensor.bitEqual(t, flat(loaded.params).get(k)!), k)
      const stored = Option.getOrThrow(yield* StateDict.storedConfig(loaded.metadata))
      assert.deepStrictEqual(stored, narrow)
      // The reference widths do not fit the narrower file.
      const full = yield* Effect.flip(StateDict.decode(tiny, bytes))
      if (full._tag !== "StateDictMismatch") return assert.fail(full.message)
      assert.strictEqual(full.mismatches[0], "blocks.0.attn.qkv.weight is [45, 8], expected [24, 8]")
    }))

  it.effect("half-precision checkpoints import widened exactly; a prefix selects the EMA weights", () =>
    Effect.gen(function*() {
      const params = flat(Init.host(tiny, 12))
      for (const [dtype, tolerance] of [["F16", 2 ** -11], ["BF16", 2 ** -8]] as const) {
        const half = yield* StateDict.encode(tiny, ParamTree.unflatten([...params]), { dtype })
        const loaded = yield* StateDict.decode(tiny, half)
        assert.deepStrictEqual(loaded.dtypes, [dtype])
        for (const [k, t] of flat(loaded.params)) {
          const original = params.get(k)!.data
          t.data.forEach((v, i) => assert.isAtMost(Math.abs(v - original[i]!), tolerance * Math.abs(original[i]!) + 1e-7, k))
        }
        // Widening is exact: narrowing again reproduces the file.
        assert.deepStrictEqual(yield* StateDict.encode(tiny, loaded.params, { dtype }), half)
      }
      const twice = Safetensors.encode([
        ...[...params].map(([k, t]) => [`model.${k}`, t] as const),
        ...[...params].map(([k, t]) => [`ema.${k}`, HostTensor.float32(t.shape, Float32Array.from(t.data, (v) => v + 1))] as const)
      ])
      const ema = flat((yield* StateDict.decode(tiny, twice, { prefix: "ema." })).params)
      assert.strictEqual(ema.get("pos_embed")!.data[0], params.get("pos_embed")!.data[0]! + 1)
      const bare = yield* Effect.flip(StateDict.decode(tiny, twice))
      assert.strictEqual(bare._tag, "StateDictMismatch")
    }))

  it.effect("a checkpoint that does not fit the config fails listing the first mismatches", () =>
    Effect.gen(function*() {
      const bytes = yield* StateDict.encode(tiny, Init.host(tiny, 13))
      const shallower = yield* Effect.flip(StateDict.decode({ ...tiny, depth: 2 }, bytes))
      assert.strictEqual(shallower._tag, "StateDictMismatch")
      if (shallower._tag !== "StateDictMismatch") return
      assert.strictEqual(shallower.count, 10)
      assert.strictEqual(shallower.mismatches[0], "unexpected blocks.2.adaLN_modulation.1.bias [48]")
      assert.match(shallower.message, /does not fit DiT\(depth 2, hidden 8.*10 mismatches/)

      const wider = yield* Effect.flip(StateDict.decode({ ...tiny, depth: 28, numClasses: 5 }, bytes))
      if (wider._tag !== "StateDictMismatch") return assert.fail(wider.message)
      assert.strictEqual(wider.mismatches[0], "y_embedder.embedding_table.weight is [4, 8], expected [6, 8]")
      assert.strictEqual(wider.mismatches[1], "missing blocks.3.attn.qkv.weight [24, 8]")
      assert.strictEqual(wider.mismatches.length, StateDict.listed)
      assert.strictEqual(wider.count, 1 + 25 * 10)
      assert.match(wider.message, /and 241 more/)

      const corrupt = yield* Effect.flip(StateDict.decode(tiny, bytes.subarray(0, bytes.length - 4)))
      assert.strictEqual(corrupt._tag, "SafetensorsError")
      const badMeta = yield* Effect.flip(StateDict.storedConfig({ [StateDict.configKey]: "{\"depth\": 0}" }))
      assert.match(badMeta.message, /invalid model config/)
    }))
})
