import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Manifest from "./Manifest.ts"

const parts = { stage: "train", code: "c0de", config: { lr: 0.01, steps: 10 }, inputs: { data: "data-0123" } }

describe("Manifest", () => {
  it("sha256 matches the FIPS 180-2 test vector", () => {
    assert.strictEqual(Manifest.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  })

  it("canonical JSON sorts keys at every level and keeps array order", () => {
    assert.strictEqual(
      Manifest.canonicalJson({ b: 1, a: { d: [3, { z: 1, y: 2 }], c: null } }),
      `{"a":{"c":null,"d":[3,{"y":2,"z":1}]},"b":1}`
    )
  })

  it("a key is the stage name and 24 hex digits of the sha256 of the canonical parts", () => {
    const key = Manifest.keyOf(parts)
    const digest = Manifest.sha256(
      `{"code":"c0de","config":{"lr":0.01,"steps":10},"inputs":{"data":"data-0123"},"stage":"train"}`
    )
    assert.strictEqual(key, `train-${digest.slice(0, 24)}`)
    // Field order does not matter; every part does.
    assert.strictEqual(Manifest.keyOf({ ...parts, config: { steps: 10, lr: 0.01 } }), key)
    const variants = [
      { ...parts, stage: "train2" },
      { ...parts, code: "c0df" },
      { ...parts, config: { lr: 0.02, steps: 10 } },
      { ...parts, inputs: { data: "data-4567" } },
      { ...parts, inputs: { other: "data-0123" } }
    ]
    const keys = new Set([key, ...variants.map(Manifest.keyOf)])
    assert.strictEqual(keys.size, 1 + variants.length)
  })

  it.effect("the Schema rejects what a manifest must not hold", () =>
    Effect.gen(function*() {
      const good: Manifest.Manifest = {
        format: Manifest.format,
        key: "k",
        stage: "train",
        code: "c0de",
        config: { lr: 0.1 },
        inputs: {},
        files: [{ name: "params.safetensors", bytes: 8, sha256: "0".repeat(64) }],
        output: { loss: 1 },
        metrics: { loss: 1, bad: null },
        timings: { startedAt: "2025-01-01T00:00:00.000Z", seconds: 1, attempts: 1 },
        backend: null,
        createdAt: "2025-01-01T00:00:01.000Z",
        host: "h"
      }
      const decode = Schema.decodeUnknownExit(Manifest.Manifest)
      assert.strictEqual(decode(good)._tag, "Success")
      const failures = [
        { ...good, format: 1 },
        { ...good, stage: "../escape" },
        { ...good, files: [{ name: "a/b", bytes: 8, sha256: "0".repeat(64) }] },
        { ...good, files: [{ name: "a", bytes: -1, sha256: "0".repeat(64) }] },
        { ...good, files: [{ name: "a", bytes: 8, sha256: "xyz" }] },
        { ...good, metrics: { loss: Number.NaN } }
      ]
      for (const bad of failures) assert.strictEqual(decode(bad)._tag, "Failure", JSON.stringify(bad))
    }))
})
