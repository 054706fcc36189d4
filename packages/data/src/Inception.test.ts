import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { Compute, Hashed, HostTensor, ParamTree, Safetensors, tf } from "@tinyfusion/tensor"
import * as Inception from "./Inception.ts"

/**
 * pytorch-fid's InceptionV3 (FIDInceptionV3 blocks, resize_input = False) on
 * hashed weights and a hashed 139 × 139 input, as parity/write_fixtures.py ran
 * it under Debian's python3-torch: pool_3, Mixed_6d.branch1x1[..., :7] and
 * pool · fc.weightᵀ.
 */
const fixture = Effect.runSync(Safetensors.decode(new Uint8Array(fs.readFileSync(fileURLToPath(new URL("./fixtures/inception.safetensors", import.meta.url))))))
const keys = JSON.parse(fixture.metadata["keys"]!) as Array<[string, Array<number>]>
const side = Number(fixture.metadata["side"])
const config: Inception.Config = { ...Inception.fid, inputSize: side }

/** The value ranges of write_fixtures.py's inception_value_range. */
const hashedWeight = (key: string, shape: ReadonlyArray<number>) => {
  const leaf = key.split(".").pop()!
  const ranges: Record<string, readonly [number, number]> = { weight: [0.5, 1.5], bias: [-0.1, 0.1], running_mean: [-0.1, 0.1], running_var: [0.5, 1.5] }
  const bound = Math.sqrt(6 / HostTensor.numel(shape.slice(1)))
  const [lo, hi] = key.includes(".bn.") ? ranges[leaf]! : key === "fc.bias" ? [-0.1, 0.1] : [-bound, bound]
  return HostTensor.float32(shape, Hashed.values(key, HostTensor.numel(shape), lo, hi))
}

const relativeError = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let diff = 0
  let scale = 0
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!))
    scale = Math.max(scale, Math.abs(b[i]!))
  }
  return diff / scale
}

describe("Inception", () => {
  it("pytorch-fid's state_dict keys and shapes, BatchNorm counters aside; 23.9 M parameters", () => {
    const expected = keys.filter(([k]) => !Inception.isBookkeeping(k))
    assert.deepStrictEqual(Inception.referenceShapes(Inception.fid).map(([k, s]) => [k, [...s]]), expected)
    assert.strictEqual(Inception.referenceShapes(Inception.fid).reduce((n, [, s]) => n + HostTensor.numel(s), 0), 23_885_392)
    assert.deepStrictEqual([Inception.poolDim(Inception.fid), Inception.spatialSide(Inception.fid), Inception.spatialDim(Inception.fid)], [2048, 17, 2023])
    assert.strictEqual(Inception.spatialDim(config), fixture.tensors.get("spatial")!.shape[1])
  })

  it.effect("pool, spatial and logits match pytorch-fid's FIDInceptionV3 within 1e-4 relative", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      const tensors = new Map(Inception.referenceShapes(config).map(([k, s]) => [k, hashedWeight(k, s)] as const))
      const tree = HostTensor.treeToTensors(ParamTree.unflatten([...tensors]))
      const net = Inception.prepare(config, tree)
      ParamTree.dispose(tree)
      const x = tf.tidy(() => tf.sub(tf.mul(tf.tensor4d(Hashed.values("input", 2 * side * side * 3, 0, 1), [2, side, side, 3]), 2), 1) as tf.Tensor4D)
      const out = Inception.forward(net, x)
      for (const name of ["pool", "spatial", "logits"] as const) {
        const error = relativeError(yield* compute.read(out[name]), fixture.tensors.get(name)!.data)
        assert.isBelow(error, 1e-4, name)
      }
      tf.dispose([x, out.pool, out.spatial, out.logits])
      Inception.dispose(net)
    }).pipe(Effect.provide(Compute.wasm)), 120_000)

  it.effect("ADM's preprocessing: 8-bit values back from [-1, 1], TF's legacy bilinear resize, (x − 128) / 128", () =>
    Effect.gen(function*() {
      const compute = yield* Compute
      // A 2 × 2 image [[0, 64], [128, 255]] resized to 3 × 3 without half-pixel centres samples the source at 0, 2/3, 4/3.
      const pixels = [0, 64, 128, 255]
      const image = tf.tensor4d(pixels.map((p) => p / 127.5 - 1), [1, 2, 2, 1])
      const out = yield* compute.read(Inception.preprocess({ ...Inception.fid, inputSize: 3 }, image))
      const lerp = (a: number, b: number, t: number) => a + (b - a) * t
      const at = (y: number, x: number) => {
        const [y0, x0] = [Math.min(1, Math.floor(y)), Math.min(1, Math.floor(x))]
        const [y1, x1] = [Math.min(1, y0 + 1), Math.min(1, x0 + 1)]
        const top = lerp(pixels[y0 * 2 + x0]!, pixels[y0 * 2 + x1]!, x - x0)
        const bottom = lerp(pixels[y1 * 2 + x0]!, pixels[y1 * 2 + x1]!, x - x0)
        return (lerp(top, bottom, y - y0) - 128) / 128
      }
      const expected = [0, 2 / 3, 4 / 3].flatMap((y) => [0, 2 / 3, 4 / 3].map((x) => at(y, x)))
      assert.strictEqual(out.length, 9)
      out.forEach((v, i) => assert.approximately(v, expected[i]!, 1e-5, `pixel ${i}`))
      assert.approximately(out[0]!, -1, 1e-6)
      assert.approximately(out[8]!, 127 / 128, 1e-5)
    }).pipe(Effect.provide(Compute.cpu)))
})
