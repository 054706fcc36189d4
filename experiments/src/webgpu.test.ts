/**
 * One cell of the quick grid end to end on the webgpu backend, against the
 * same cell on wasm: Table 1's TinyDiT-D14 with masked KD (t1/tinydit-d14-kd)
 * at toy sizes — the data stages, the teacher's pre-training, learnable 1:2
 * mask learning with LoRA, the export of the kept blocks, masked-KD recovery,
 * and the evaluation (guided DDPM sampling, decoding, features, metrics).
 *
 * Every artifact of the cell is compared: its output, every JSON file it
 * wrote (the loss curves, the decision with its history) and every tensor
 * file (latents, weights, EMA, gates, features).
 */
import { NodeServices } from "@effect/platform-node"
import { assert, beforeEach, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { ArtifactStore, Graph, Stage } from "@tinyfusion/core"
import { Stages } from "@tinyfusion/data"
import { Pretrain } from "@tinyfusion/diffusion"
import { Evaluation, Fixtures, Reference } from "@tinyfusion/eval"
import type { Models } from "@tinyfusion/models"
import { PruneStage } from "@tinyfusion/pruning"
import { Recovery, RecoveryStage } from "@tinyfusion/recovery"
import { type BackendName, Compute, HostTensor, WebGpuFixture } from "@tinyfusion/tensor"
import type * as Cells from "./cells.ts"

/** The quick preset's DiT teacher shrunk: 4 blocks of 16 on 4×4×4 latents, 12 steps. */
const teacher: Pretrain.PretrainConfig = {
  family: "dit",
  model: { inputSize: 4, patchSize: 2, inChannels: 4, hiddenSize: 16, depth: 4, numHeads: 2, mlpRatio: 2, numClasses: 3, classDropoutProb: 0.1, learnSigma: true },
  training: { steps: 12, batchSize: 8, seed: 0, lr: 2e-3, weightDecay: 0, emaDecay: 0.9, checkpointEvery: 6, curveEvery: 3, nonFinite: "skip" }
}

/** Every stage of the cell as a graph on a fresh store (the nodes the suite's cells.ts builds); its artifacts, upstream first. */
const cell = Effect.gen(function*() {
  const autoencoder = Graph.node(Stages.AutoencoderStage, Fixtures.autoencoderConfig, {})
  const latents = Graph.node(Stages.LatentsStage, { dataset: "synthetic", seed: 0, shardSize: 24, batchSize: 8 }, { autoencoder })
  const featureNet = Graph.node(Stages.FeatureNetStage, Fixtures.featureNetConfig, {})
  const reference = Graph.node(Reference.ReferenceStage, Fixtures.referenceConfig, { featureNet })
  const pretrained = Graph.node(Pretrain.PretrainStage, teacher, { latents })
  const pruned = Graph.node(
    PruneStage.PruneStage,
    yield* Stage.decodeConfig(PruneStage.PruneStage, {
      method: "learnable",
      keep: 2,
      scheme: "1:2",
      seed: 0,
      calibration: 8,
      options: { iterations: 10, update: "lora", batchSize: 8, logEvery: 2, checkpointEvery: 5 }
    }),
    { teacher: pretrained, data: latents }
  )
  const exported = Graph.node(PruneStage.ExportStage, {}, { decision: pruned, teacher: pretrained })
  // Masked KD with k = 2, its RepKD pairs from the decision that made the student.
  const recovered = Graph.node(RecoveryStage.RecoveryStage, {
    strategy: "masked-kd",
    options: { k: 2 },
    training: { ...Recovery.paperTraining(6, 8, 0), emaDecay: 0.5, checkpointEvery: 3, curveEvery: 1 }
  }, { teacher: pretrained, student: exported, latents })
  // A recovery's output is a model unless it diverged (the model port refuses that one), as in cells.ts.
  const evaluation = Graph.node(Evaluation.EvaluationStage, {
    ...Evaluation.miniEvaluation,
    samples: 16,
    batchSize: 8,
    splitSize: 8,
    gridImages: 4,
    partBatches: 1,
    sampling: { sampler: "ddpm" as const, steps: "4", cfgScale: 1.5, guidedChannels: "first-3" as const, seed: 0 }
  }, { model: recovered as Graph.Node<Models.Any, unknown, Cells.Needs>, autoencoder, reference })
  const { run } = yield* Graph.runner
  return [
    yield* run(autoencoder),
    yield* run(latents),
    yield* run(featureNet),
    yield* run(reference),
    yield* run(pretrained),
    yield* run(pruned),
    yield* run(exported),
    yield* run(recovered),
    yield* run(evaluation)
  ] as const
})

/** Each artifact of the cell on `backend`: its stage, key, output, JSON files and tensors. */
const onBackend = (backend: BackendName) =>
  Effect.gen(function*() {
    const artifacts = yield* cell
    return yield* Effect.forEach(artifacts, (a: Stage.Artifact<unknown>) =>
      Effect.gen(function*() {
        const json: Record<string, unknown> = { output: a.manifest.output }
        const tensors = new Map<string, HostTensor.HostTensor>()
        for (const file of a.manifest.files) {
          if (file.name.endsWith(".json")) json[file.name] = JSON.parse(new TextDecoder().decode(yield* a.bytes(file.name)))
          if (file.name.endsWith(".safetensors")) for (const [k, t] of yield* a.tensorMap(file.name)) tensors.set(`${file.name}:${k}`, t)
        }
        return { stage: a.manifest.stage, key: a.key, backend: a.manifest.backend?.name, json, tensors }
      }))
  }).pipe(
    Effect.provide(Layer.mergeAll(ArtifactStore.layerTemp, Fixtures.dataset, Logger.layer([])).pipe(Layer.provideMerge(NodeServices.layer))),
    Effect.provide(Compute.layer(backend))
  )

/** Every number of two JSON values side by side, with its path; anything else must be equal. */
const numbers = (a: unknown, b: unknown, path: string, out: Array<{ path: string; a: number; b: number }>): void => {
  if (typeof a === "number" && typeof b === "number") out.push({ path, a, b })
  else if (Array.isArray(a) && Array.isArray(b)) {
    assert.strictEqual(a.length, b.length, `${path}: length`)
    a.forEach((x, i) => numbers(x, b[i], `${path}[${i}]`, out))
  } else if (a !== null && b !== null && typeof a === "object" && typeof b === "object") {
    assert.deepStrictEqual(Object.keys(a).sort(), Object.keys(b).sort(), `${path}: keys`)
    for (const k of Object.keys(a)) numbers((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`, out)
  } else assert.deepStrictEqual(a, b, path)
}

/**
 * The tolerances. Both backends compute in float32, in other orders (GPU
 * reductions, tiled matmuls) and with other elementary functions (WGSL's exp
 * and log need not be correctly rounded), and training carries those
 * roundings forward through 12 + 10 + 6 optimiser steps. Measured on
 * lavapipe: stored numbers (losses, their terms, gate probabilities,
 * metrics) within 3.7e-6 of each other, relative (the largest: the KD term
 * of the first recovery step, itself 1e-7); tensors within 9.1e-5 of their
 * largest element (the zero-initialised final layer after 12 Adam steps).
 * The bounds leave 25× and 10× to that, and stay far below what a change of
 * the computation moves: another seed of the teacher moves its loss by 7%,
 * the recovered loss by 0.4%, FID by 2.5%, and keeps other blocks.
 * Discrete outcomes — the kept blocks, the feature network's accuracy,
 * precision and recall (multiples of 1/16) — must be equal.
 */
const tolerance = { numbers: 1e-4, tensors: 1e-3 }

describe("a cell of the quick grid on webgpu", () => {
  beforeEach(WebGpuFixture.required)

  it.effect("every stage runs there and agrees with wasm: each output, curve, decision, tensor and metric; the same pruning decision", () =>
    Effect.gen(function*() {
      const wasm = yield* onBackend("wasm")
      const gpu = yield* onBackend("webgpu")
      assert.deepStrictEqual(gpu.map((a) => a.stage), ["autoencoder", "latents", "feature-net", "reference", "pretrain", "prune", "prune-export", "recovery", "evaluation"])
      wasm.forEach((w, i) => {
        const g = gpu[i]!
        assert.deepStrictEqual([w.key, w.backend, g.backend], [g.key, "wasm", "webgpu"], w.stage)
        const pairs: Array<{ path: string; a: number; b: number }> = []
        numbers(w.json, g.json, w.stage, pairs)
        for (const { path, a, b } of pairs) {
          assert.isAtMost(Math.abs(a - b), tolerance.numbers * Math.max(Math.abs(a), Math.abs(b)), `${path}: wasm ${a}, webgpu ${b}`)
        }
        assert.deepStrictEqual([...g.tensors.keys()], [...w.tensors.keys()], `${w.stage}: tensors`)
        for (const [key, t] of w.tensors) {
          const u = g.tensors.get(key)!
          assert.deepStrictEqual(u.shape, t.shape, `${w.stage} ${key}: shape`)
          let scale = 0
          let diff = 0
          t.data.forEach((v, j) => {
            scale = Math.max(scale, Math.abs(v))
            diff = Math.max(diff, Math.abs(v - u.data[j]!))
          })
          assert.isAtMost(diff, tolerance.tensors * scale, `${w.stage} ${key}: max |Δ| ${diff} of a scale ${scale}`)
        }
      })

      // The same blocks kept, and not by luck: in each group the chosen candidate leads the other by far more than
      // the backends' probabilities differ.
      const decision = (run: typeof wasm) =>
        run[5]!.json["decision.json"] as { kept: Array<number>; evidence: { probabilities: Array<Array<number>> } }
      const [dw, dg] = [decision(wasm), decision(gpu)]
      assert.deepStrictEqual(dg.kept, dw.kept)
      dw.evidence.probabilities.forEach((row, k) => {
        const gap = Math.abs(row[0]! - row[1]!)
        const drift = Math.max(...row.map((p, j) => Math.abs(p - dg.evidence.probabilities[k]![j]!)))
        assert.isAbove(gap, 100 * drift, `group ${k}: lead ${gap}, backends apart by ${drift}`)
      })
    }), 600_000)
})
