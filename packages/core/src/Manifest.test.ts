import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Logger, Schema } from "effect"
import { HostTensor, Rng } from "@tinyfusion/tensor"
import { ArtifactStore } from "./ArtifactStore.ts"
import * as Manifest from "./Manifest.ts"
import * as Stage from "./Stage.ts"

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
      const good: Manifest.Fields = {
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
      const decode = Schema.decodeUnknownExit(Manifest.Fields)
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

/** A prune-like stage: config, an input, an output with kept blocks and a loss, metrics, a tensor file. */
const Upstream = Stage.make({
  name: "teacher",
  module: import.meta.url,
  config: Schema.Struct({ depth: Schema.Int }),
  output: Schema.Struct({ depth: Schema.Int }),
  run: (config) => Effect.succeed({ depth: config.depth })
})
const Prune = Stage.make({
  name: "prune",
  module: import.meta.url,
  config: Schema.Struct({ method: Schema.String, scheme: Schema.String, seed: Schema.Int, lr: Schema.Finite }),
  inputs: { teacher: Upstream.output },
  output: Schema.Struct({ kept: Schema.Array(Schema.Int), calibrationLoss: Schema.Finite, confidence: Schema.Finite }),
  run: (_config, _inputs, ctx) =>
    Effect.gen(function*() {
      yield* ctx.writeTensors("gates.safetensors", { logits: HostTensor.float32([2, 2], new Float32Array([0.25, -1.5, 3e-7, 12])) })
      yield* ctx.writeJson("decision.json", { kept: [0, 3] })
      yield* ctx.metric("fid", 4.444)
      yield* ctx.metric("itPerS", 13.54)
      yield* ctx.metric("nan", Number.NaN)
      return { kept: [0, 3], calibrationLoss: 0.32201234, confidence: 0.9987 }
    })
})

/** Equal as JSON values (-0 and 0 are one JSON number). */
const asJson = (value: unknown): string => Manifest.canonicalJson(JSON.parse(JSON.stringify(value)))

describe("Manifest.decode", () => {
  it.effect("fuzz: every single-byte edit of a real manifest is rejected or decodes to the same manifest", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "manifest-fuzz-" })
      const pruned = yield* Effect.gen(function*() {
        const teacher = yield* Stage.run(Upstream, { depth: 4 }, {})
        return yield* Stage.run(Prune, { method: "learnable", scheme: "1:2", seed: 0, lr: 1e-3 }, { teacher })
      }).pipe(Effect.provide(ArtifactStore.layer(root)), Effect.provide(Logger.layer([])))
      const bytes = yield* fs.readFile(`${pruned.dir}/${Manifest.manifestName}`)
      const text = (b: Uint8Array) => new TextDecoder().decode(b)
      const original = Manifest.decode(text(bytes))
      assert.strictEqual(original._tag, "Valid")
      const expected = asJson(pruned.manifest)
      // Replacements by three random bytes, a deletion and an insertion at every position.
      const draws = Rng.integers(Rng.stream(0, "manifest-fuzz"), 0, bytes.length * 4, 0, 256)
      const counts = { edits: 0, rejected: 0, equal: 0 }
      const check = (edited: Uint8Array, what: string) => {
        counts.edits++
        const seen = Manifest.decode(text(edited))
        if (seen._tag === "Invalid") counts.rejected++
        else {
          assert.strictEqual(asJson(seen.manifest), expected, what)
          counts.equal++
        }
      }
      for (let at = 0; at < bytes.length; at++) {
        for (let k = 0; k < 3; k++) {
          const value = draws[at * 4 + k]!
          if (value === bytes[at]) continue
          const edited = Uint8Array.from(bytes)
          edited[at] = value
          check(edited, `byte ${at} ← ${value}`)
        }
        check(Uint8Array.from([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]), `byte ${at} deleted`)
        check(Uint8Array.from([...bytes.subarray(0, at), draws[at * 4 + 3]!, ...bytes.subarray(at)]), `byte ${draws[at * 4 + 3]} inserted at ${at}`)
      }
      // What may pass is layout (whitespace, a number's spelling), never content: most edits are caught.
      assert.isAbove(counts.edits, 4 * bytes.length)
      assert.strictEqual(counts.rejected + counts.equal, counts.edits)
      assert.isAbove(counts.rejected / counts.edits, 0.9)
      // The counts, for the record (pnpm vitest run packages/core/src/Manifest.test.ts).
      console.log(`manifest fuzz: ${bytes.length} bytes, ${counts.edits} edits, ${counts.rejected} rejected, ${counts.equal} decoded equal`)
    })).pipe(Effect.provide(NodeServices.layer)))
})
