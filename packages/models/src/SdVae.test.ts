import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { Compute, Hashed, HostTensor, ParamTree, Safetensors, tf } from "@tinyfusion/tensor"
import * as SdVae from "./SdVae.ts"

/**
 * latent-diffusion's Encoder/Decoder (kl-f8's ddconfig at channels 32, 64, 64, 64)
 * on hashed weights and inputs, and diffusers' converter of that layout, as
 * parity/write_fixtures.py ran them under Debian's python3-torch.
 */
const fixture = Effect.runSync(Safetensors.decode(new Uint8Array(fs.readFileSync(fileURLToPath(new URL("./fixtures/sd-vae.safetensors", import.meta.url))))))
const meta = <A>(key: string) => JSON.parse(fixture.metadata[key]!) as A
const original = meta<Array<[string, Array<number>]>>("original")
const diffusersMap = meta<Array<[string, string, Array<number>]>>("diffusers")
const config: SdVae.Config = { ...SdVae.klF8, channels: [32, 64, 64, 64] }

/** The value ranges of write_fixtures.py's vae_value_range. */
const hashedWeight = (key: string, shape: ReadonlyArray<number>, as: ReadonlyArray<number> = shape) => {
  const parts = key.split(".")
  const [lo, hi] = parts[parts.length - 2]!.includes("norm")
    ? key.endsWith("weight") ? [0.5, 1.5] : [-0.1, 0.1]
    : key.endsWith("bias")
    ? [-0.1, 0.1]
    : [-Math.sqrt(3 / HostTensor.numel(shape.slice(1))), Math.sqrt(3 / HostTensor.numel(shape.slice(1)))]
  return HostTensor.float32(as, Hashed.values(key, HostTensor.numel(shape), lo!, hi!))
}

const originalTensors = new Map(original.map(([k, s]) => [k, hashedWeight(k, s)] as const))
const shapeOf = new Map(original)
const diffusersTensors = new Map(diffusersMap.map(([k, from, s]) => [k, hashedWeight(from, shapeOf.get(from)!, s)] as const))
const legacyName = (k: string) =>
  k.replace("attentions.0.to_q.", "attentions.0.query.").replace("attentions.0.to_k.", "attentions.0.key.")
    .replace("attentions.0.to_v.", "attentions.0.value.").replace("attentions.0.to_out.0.", "attentions.0.proj_attn.")
const legacyTensors = new Map([...diffusersTensors].map(([k, t]) => {
  const attention = /attentions\.0\.to_(q|k|v|out\.0)\.weight$/.test(k)
  return [legacyName(k), attention ? HostTensor.float32(t.shape.slice(0, 2), t.data as Float32Array) : t] as const
}))

/** max |a − b| / max |b|. */
const relativeError = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let diff = 0
  let scale = 0
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!))
    scale = Math.max(scale, Math.abs(b[i]!))
  }
  return diff / scale
}

const run = (tensors: Map<string, HostTensor.HostTensor>) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const tree = HostTensor.treeToTensors(ParamTree.unflatten([...tensors]))
    const x = tf.tensor4d(Hashed.values("input", 2 * 32 * 32 * 3, -1, 1), [2, 32, 32, 3])
    const z = tf.tensor4d(Hashed.values("latent", 2 * 4 * 4 * 4, -2, 2), [2, 4, 4, 4])
    const posterior = SdVae.encode(config, tree, x)
    const moments = yield* compute.read(tf.concat([posterior.mean, posterior.logvar], 3))
    const decoded = yield* compute.read(SdVae.decode(config, tree, z))
    tf.dispose([x, z, posterior.mean, posterior.logvar])
    ParamTree.dispose(tree)
    return { moments, decoded }
  })

describe("SdVae", () => {
  it("latent-diffusion's and diffusers' key sets map onto referenceShapes; layouts are told apart", () => {
    assert.strictEqual(SdVae.detectLayout(originalTensors.keys()), "original")
    assert.strictEqual(SdVae.detectLayout(diffusersTensors.keys()), "diffusers")
    assert.strictEqual(SdVae.detectLayout(legacyTensors.keys()), "diffusers-legacy-attention")
    assert.isUndefined(SdVae.detectLayout(["pos_embed", "blocks.0.attn.qkv.weight"]))
    const expected = SdVae.referenceShapes(config).map(([k, s]) => `${k} ${s.join("x")}`).sort()
    for (const [layout, tensors] of [["original", originalTensors], ["diffusers", diffusersTensors], ["diffusers-legacy-attention", legacyTensors]] as const) {
      const mapped = SdVae.fromLayout(layout, tensors, SdVae.squeezeHost)
      assert.deepStrictEqual([...mapped.tensors].map(([k, t]) => `${k} ${t.shape.join("x")}`).sort(), expected, layout)
      assert.deepStrictEqual(mapped.ignored, [])
      assert.deepStrictEqual(SdVae.inferConfig(mapped.tensors), config)
    }
    const kl = SdVae.referenceShapes(SdVae.klF8).reduce((n, [, s]) => n + HostTensor.numel(s), 0)
    // diffusers' AutoencoderKL (sd-vae-ft-ema): 34,163,592 encoder+quant and 49,490,179 decoder+post_quant parameters.
    assert.strictEqual(kl, 83_653_863)
  })

  it.effect("encoder and decoder match latent-diffusion's on every layout within 1e-4 relative", () =>
    Effect.gen(function*() {
      const reference = { moments: fixture.tensors.get("moments")!.data, decoded: fixture.tensors.get("decoded")!.data }
      for (const [layout, tensors] of [["original", originalTensors], ["diffusers", diffusersTensors], ["diffusers-legacy-attention", legacyTensors]] as const) {
        const mapped = SdVae.fromLayout(layout, tensors, SdVae.squeezeHost).tensors
        yield* SdVae.check(config, mapped)
        const out = yield* run(mapped)
        // The encoder's log-variance is clipped to [-30, 20] as DiagonalGaussianDistribution does; these are within.
        const encodeError = relativeError(out.moments, reference.moments)
        const decodeError = relativeError(out.decoded, reference.decoded)
        assert.isBelow(encodeError, 1e-4, `${layout} encode`)
        assert.isBelow(decodeError, 1e-4, `${layout} decode`)
      }
    }).pipe(Effect.provide(Compute.wasm)), 120_000)

  it.effect("a mismatch names the key and both shapes", () =>
    Effect.gen(function*() {
      const mapped = SdVae.fromLayout("original", originalTensors, SdVae.squeezeHost).tensors
      mapped.delete("decoder.conv_out.bias")
      mapped.set("encoder.conv_in.weight", HostTensor.float32([32, 4, 3, 3], new Float32Array(32 * 4 * 9)))
      const error = yield* Effect.flip(SdVae.check(config, mapped))
      assert.strictEqual(error.count, 2)
      assert.include(error.message, "SD-VAE (channels 32/64/64/64")
      assert.include(error.message, "encoder.conv_in.weight is [32, 4, 3, 3], expected [32, 3, 3, 3]")
      assert.include(error.message, "missing decoder.conv_out.bias [3]")
    }))
})
