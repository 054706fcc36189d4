import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, Logger } from "effect"
import { ArtifactStore } from "@tinyfusion/core"
import { Fixtures } from "@tinyfusion/eval"
import { Fixtures as ModelFixtures, MarStateDict } from "@tinyfusion/models"
import { Compute } from "@tinyfusion/tensor"
import { cli } from "../fixtures/Commands.ts"

describe("tinyfusion eval and throughput", () => {
  it.live("eval of a model by key and by file against given upstream keys; throughput of a preset; a missing model is named", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-eval-" })
      const up = yield* Fixtures.upstream.pipe(
        Effect.provide(Layer.mergeAll(ArtifactStore.layer(root), Fixtures.dataset, Logger.layer([]))),
        Effect.provide(Compute.wasm)
      )
      const common = [
        "--store", root, "--backend", "wasm", "--autoencoder", up.autoencoder.key, "--reference", up.reference.key,
        "--n", "12", "--batch-size", "6", "--steps", "3", "--grid", "4", "--split-size", "6"
      ]
      const byKey = yield* cli(["--log-level", "error", "eval", "--model-key", up.model.key, ...common])
      assert.isTrue(byKey.ok, byKey.failure)
      assert.match(byKey.text, /FID +sFID +IS +precision +recall/)
      assert.match(byKey.text, /95% +± [\d.]+ +± [\d.]+ +± [\d.]+ +± [\d.]+ +± [\d.]+/)
      assert.match(byKey.text, new RegExp(`12 samples of ${up.model.key} \\(dit, depth 2, [\\d,]+ parameters, ema weights\\)`))
      assert.match(byKey.text, /ddpm 3 steps, cfg 1.5 \(first-3\), seed 0/)
      assert.match(byKey.text, new RegExp(`against 16 reference images \\(${up.reference.key}\\)`))
      assert.match(byKey.text, /sampling on WebAssembly.*: [\d.]+ it\/s, [\d.]+ images\/s/)
      const again = yield* cli(["--log-level", "error", "eval", "--model-key", up.model.key, ...common])
      assert.match(again.text, /evaluation evaluation-[0-9a-f]+ \(cached\)/)
      assert.strictEqual(again.text.split("\n").slice(0, 3).join("\n"), byKey.text.split("\n").slice(0, 3).join("\n"))

      // The EMA weights as a file: the same model, so the same figures, through the model-file stage.
      const file = `${root}/tiny-ema.safetensors`
      yield* fs.writeFile(file, yield* up.model.bytes("ema.safetensors"))
      const byFile = yield* cli(["--log-level", "error", "eval", "--model-file", file, "--weights", "raw", ...common])
      assert.isTrue(byFile.ok, byFile.failure)
      assert.match(byFile.text, /12 samples of model-file-[0-9a-f]+ \(dit, depth 2, [\d,]+ parameters, raw weights\)/)
      assert.strictEqual(byFile.text.split("\n").slice(0, 3).join("\n"), byKey.text.split("\n").slice(0, 3).join("\n"))

      const neither = yield* cli(["--log-level", "error", "eval", ...common])
      assert.isFalse(neither.ok)
      assert.match(neither.failure, /which model\? give either --model-key KEY or --model-file FILE/)
      const wrongKey = yield* cli(["--log-level", "error", "eval", "--model-key", up.reference.key, ...common])
      assert.match(wrongKey.failure, /input --model-key \(reference artifact reference-[0-9a-f]+\) does not fit: .*\["family"\]/)

      const speed = yield* cli(["--log-level", "error", "throughput", "--backend", "wasm", "--preset", "mini", "--depth", "2", "--batch", "2", "--warmup", "0", "--repetitions", "2"])
      assert.isTrue(speed.ok, speed.failure)
      assert.match(speed.text, /mini \(reference init\): DiT\(depth 2, hidden 128/)
      assert.match(speed.text, /2 \(4\) +[\d.]+ +[\d.]+ +[\d.]+ +2/)
    }).pipe(Effect.provide(NodeServices.layer))), 120_000)

  it.live("eval of a MAR file (--family mar): stored by the mar-file stage, sampled by unmasking; throughput refuses a MAR", () =>
    Effect.scoped(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const root = yield* fs.makeTempDirectoryScoped({ prefix: "cli-eval-mar-" })
      const up = yield* Fixtures.upstream.pipe(
        Effect.provide(Layer.mergeAll(ArtifactStore.layer(root), Fixtures.dataset, Logger.layer([]))),
        Effect.provide(Compute.wasm)
      )
      // A MAR on the fixture's 4×4×4 latents, as `checkpoint import --family mar` writes one.
      const config = { ...ModelFixtures.mar, inChannels: 4, numSamplingSteps: "4" }
      const file = `${root}/mar.safetensors`
      yield* fs.writeFile(file, yield* MarStateDict.encode(config, MarStateDict.init(config, 3)))
      const common = [
        "--store", root, "--backend", "wasm", "--autoencoder", up.autoencoder.key, "--reference", up.reference.key,
        "--n", "6", "--batch-size", "6", "--grid", "0", "--split-size", "6", "--model-file", file
      ]
      const out = yield* cli(["--log-level", "error", "eval", "--family", "mar", "--iterations", "2", "--cfg", "2", ...common])
      assert.isTrue(out.ok, out.failure)
      assert.match(out.text, /6 samples of mar-file-[0-9a-f]+ \(mar, depth 4, 16,608 parameters, raw weights\)/)
      assert.match(out.text, /2 unmasking steps, cfg 2 \(linear\), temperature 1, seed 0/)
      const asDit = yield* cli(["--log-level", "error", "eval", ...common])
      assert.isFalse(asDit.ok)
      const speed = yield* cli(["--log-level", "error", "throughput", "--backend", "wasm", "--family", "mar", "--model-file", file])
      assert.match(speed.failure, /throughput measures a DiT or SiT's sampling/)
    }).pipe(Effect.provide(NodeServices.layer))), 120_000)
})
