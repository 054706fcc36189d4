import { NodeServices } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, Logger } from "effect"
import { ArtifactStore } from "@tinyfusion/core"
import { Fixtures } from "@tinyfusion/eval"
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
})
