/**
 * What the artifact store costs per byte: committing a tensor artifact
 * (encode, write, fsync, rename), verifying it (sha256 of every file, as a
 * cache hit does) and reading it back (read, sha256, decode). Checkpoints and
 * cache hits of large models pay these per gigabyte.
 */
import { Effect, FileSystem } from "effect"
import { HostTensor, Safetensors } from "@tinyfusion/tensor"
import { ArtifactStore } from "./ArtifactStore.ts"
import * as Manifest from "./Manifest.ts"

export interface Figure {
  readonly operation: string
  readonly ms: number
  readonly mibPerSecond: number
}

const time = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = performance.now()
    const value = yield* self
    return { value, ms: performance.now() - start }
  })

/** Times one artifact of `mib` MiB of float32 in a temporary store under `dir`. */
export const measure = Effect.fn("StoreBenchmark.measure")(function*(mib: number, dir: string) {
  const fs = yield* FileSystem.FileSystem
  const root = yield* fs.makeTempDirectoryScoped({ directory: dir, prefix: "bench-store-" })
  const n = (mib * 2 ** 20) / 4
  // Eight tensors, like the layers of a model; the values only need to vary.
  const tree = Array.from({ length: 8 }, (_, layer) => ({
    weight: HostTensor.float32([n / 8], Float32Array.from({ length: n / 8 }, (_, i) => Math.sin(layer * 7919 + i)))
  }))
  const key = Manifest.keyOf({ stage: "bench", code: "bench", config: null, inputs: {} })
  const figures = yield* Effect.gen(function*() {
    const store = yield* ArtifactStore
    const encode = yield* time(Effect.sync(() => Safetensors.encode(tree.map((t, i) => [`${i}.weight`, t.weight] as const))))
    const commit = yield* time(Effect.scoped(Effect.gen(function*() {
      const staging = yield* store.staging
      yield* staging.writeTensors("params.safetensors", tree)
      return yield* store.commit(staging, store.artifactDir(key), {
        format: Manifest.format,
        key,
        stage: "bench",
        code: "bench",
        config: null,
        inputs: {},
        output: null,
        metrics: {},
        timings: { startedAt: new Date().toISOString(), seconds: 0, attempts: 1 },
        backend: null,
        createdAt: new Date().toISOString(),
        host: "bench"
      })
    })))
    const verify = yield* time(store.inspect(key))
    const read = yield* time(Effect.flatMap(
      store.readFile(store.artifactDir(key), commit.value, "params.safetensors"),
      Safetensors.decode
    ))
    const bytes = commit.value.files[0]!.bytes
    const figure = (operation: string, ms: number): Figure => ({ operation, ms, mibPerSecond: bytes / 2 ** 20 / (ms / 1000) })
    return [
      figure("encode (safetensors, in memory)", encode.ms),
      figure("commit (encode, write, fsync, rename)", commit.ms),
      figure("verify (sha256 of every file)", verify.ms),
      figure("read back (read, sha256, decode)", read.ms)
    ]
  }).pipe(Effect.provide(ArtifactStore.layer(root)))
  return figures
})
