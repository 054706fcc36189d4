/**
 * `bench paper`: the paper path's networks at their real sizes — SD-VAE
 * kl-f8 decoding 32 × 32 × 4 latents to 256 × 256 images, and the FID
 * Inception-V3 (256 → 299 resize included) — in images/s on each backend,
 * on random weights (speed does not depend on them).
 */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { Inception } from "@tinyfusion/data"
import { SdVae } from "@tinyfusion/models"
import { Benchmark, Compute, Hashed, HostTensor, ParamTree, tf } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend } from "./compute.ts"

const randomTree = (shapes: ReadonlyArray<readonly [string, ReadonlyArray<number>]>) =>
  HostTensor.treeToTensors(ParamTree.unflatten(shapes.map(([key, shape]) => {
    const bound = shape.length === 1 ? 0.1 : Math.sqrt(3 / HostTensor.numel(shape.slice(1)))
    return [key, Hashed.tensor(key, shape, key.endsWith("running_var") ? 0.5 : -bound, key.endsWith("running_var") ? 1.5 : bound)] as const
  })))

export const paper = Command.make(
  "paper",
  {
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(4), Flag.withDescription("Images per forward")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(3), Flag.withDescription("Timed forwards per network")),
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      yield* Console.log(`SD-VAE kl-f8 decode (32×32×4 → 256×256×3) and FID Inception-V3 (256×256×3 → 299, pool + spatial + logits), batch ${o.batch}`)
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        Effect.gen(function*() {
          const compute = yield* Compute
          const timed = (label: string, run: () => tf.Tensor) =>
            Effect.gen(function*() {
              const t = yield* Benchmark.time(compute.scoped(Effect.suspend(() => compute.read(run()))), { warmup: 1, repetitions: o.repetitions })
              rows.push([name, label, Table.fixed(t.ms, 0), Table.fixed((o.batch * 1000) / t.ms, 2)])
            })
          const vae = randomTree(SdVae.referenceShapes(SdVae.klF8))
          const z = tf.randomNormal([o.batch, 32, 32, 4], 0, 1, "float32", 1) as tf.Tensor4D
          yield* timed("SD-VAE decode", () => SdVae.decode(SdVae.klF8, vae, z))
          ParamTree.dispose(vae)
          const tree = randomTree(Inception.referenceShapes(Inception.fid))
          const net = Inception.prepare(Inception.fid, tree)
          ParamTree.dispose(tree)
          const images = tf.randomUniform([o.batch, 256, 256, 3], -1, 1, "float32", 2) as tf.Tensor4D
          yield* timed("Inception features", () => {
            const out = Inception.forward(net, Inception.preprocess(Inception.fid, images))
            return tf.concat([out.pool, out.spatial, out.logits], 1)
          })
          Inception.dispose(net)
          tf.dispose([z, images])
        }))
      yield* Console.log(Table.render(["backend", "network", "median ms/batch", "images/s"], rows))
    })
).pipe(Command.withDescription("Time SD-VAE decoding and FID Inception features at the paper's sizes (images/s)"))
