/** `bench dit`: DiT forward and training steps, the mini teacher and DiT-XL/2 shapes, on each backend. */
import { Console, Effect } from "effect"
import { Command, Flag } from "effect/cli"
import { GaussianDiffusion, Training } from "@tinyfusion/diffusion"
import { Config, DiT, Init, StateDict } from "@tinyfusion/models"
import { AdamW, Benchmark, Compute, KernelProfile, ParamTree, Rng, tf } from "@tinyfusion/tensor"
import * as CheckedFlags from "../../CheckedFlags.ts"
import * as Table from "../../Table.ts"
import { backendsFlag, eachBackend, fusedFlag, kernelNote, matmulFlag, nativeGemmFlag, withFused, withMatMul, withNativeGemm } from "./compute.ts"

/** 2 × multiply–adds of one DiT forward: embeddings, per block the Linears and attention, the final layer. */
const forwardFlops = (c: Config.Config, batch: number): number => {
  const [d, t, mlp, pp] = [c.hiddenSize, Config.tokens(c), Config.mlpHidden(c), c.patchSize ** 2]
  const perToken = 2 * (4 * d * d + 2 * d * mlp) + 4 * t * d
  const perSample = 2 * 6 * d * d
  const ends = t * 2 * d * c.inChannels * pp + 2 * (256 * d + d * d) + 2 * 2 * d * d + t * 2 * d * pp * Config.outChannels(c)
  return batch * (c.depth * (t * perToken + perSample) + ends)
}

/**
 * The reference initialisation where drawing it is cheap; big models get a
 * constant fill instead (the work of a forward or a step does not depend on
 * the values, and drawing 675M numbers in JS would dominate the bench).
 */
const paramBytes = (config: Config.Config): number =>
  4 * StateDict.referenceShapes(config).reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1), 0)

const benchParams = (config: Config.Config): ParamTree.ParamTree => {
  const shapes = StateDict.referenceShapes(config)
  if (paramBytes(config) <= 200e6) return Init.params(config, 0)
  return ParamTree.unflatten(shapes.map(([k, s]) => [k, tf.fill([...s], 1e-3)] as const)) as ParamTree.ParamTree
}

const benchBatch = (config: Config.Config, batch: number) => ({
  x: Rng.normalTensor(Rng.stream(0, "bench/x"), 0, [batch, config.inputSize, config.inputSize, config.inChannels]) as tf.Tensor4D,
  t: Array.from({ length: batch }, (_, i) => (i * 37) % 1000),
  labels: Array.from({ length: batch }, (_, i) => i % config.numClasses)
})

interface Budget {
  readonly repetitions: number
  readonly ms: number
}

/** One untimed call (compiles kernels, sizes the run), then as many timed calls as the budget allows. */
const within = <E, R>(once: Effect.Effect<void, E, R>, budget: Budget) =>
  Effect.gen(function*() {
    const first = yield* Benchmark.time(once, { warmup: 0, repetitions: 1 })
    const repetitions = Math.max(1, Math.min(budget.repetitions, Math.floor(budget.ms / first.ms) - 1))
    return yield* Benchmark.time(once, { warmup: 0, repetitions })
  })

const forwardTiming = (config: Config.Config, batch: number, budget: Budget) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const params = benchParams(config)
    const { x, t, labels } = benchBatch(config, batch)
    const once = compute.scoped(Effect.gen(function*() {
      const out = DiT.forward(config, params, { x, t, y: labels })
      yield* compute.read(tf.slice(out, [0, 0, 0, 0], [1, 1, 1, 1]))
    }))
    return yield* within(once, budget).pipe(Effect.ensuring(Effect.sync(() => (ParamTree.dispose(params), x.dispose()))))
  })

/**
 * The forward through the open block stack with each block's weights
 * created just before it runs and released after: how a model larger than
 * the device memory (DiT-XL/2's 2.7 GB on wasm's 2 GB heap) runs. The
 * timing includes filling the weights (a memset, small beside the block's
 * matmuls).
 */
const streamedForwardTiming = (config: Config.Config, batch: number, budget: Budget) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const shapes = StateDict.referenceShapes(config)
    const fill = (keep: (key: string) => boolean, rename = (k: string) => k) =>
      ParamTree.unflatten(shapes.filter(([k]) => keep(k)).map(([k, s]) => [rename(k), tf.fill([...s], 1e-3)] as const)) as ParamTree.ParamTree
    const outer = fill((k) => !k.startsWith("blocks."))
    const { x, t, labels } = benchBatch(config, batch)
    const once = compute.scoped(Effect.gen(function*() {
      const p = DiT.params(outer)
      let h = compute.tidy(() => DiT.embed(config, p, { x, t, y: labels }))
      for (let i = 0; i < config.depth; i++) {
        const block = fill((k) => k.startsWith(`blocks.${i}.`), (k) => k.slice(`blocks.${i}.`.length))
        const next = compute.tidy(() => DiT.block(config, block as DiT.BlockParams, i, h.x, h.c))
        ParamTree.dispose(block)
        h.x.dispose()
        h = { x: next, c: h.c }
      }
      const out = DiT.finalLayer(config, p, h.x, h.c)
      yield* compute.read(tf.slice(out, [0, 0, 0, 0], [1, 1, 1, 1]))
    }))
    return yield* within(once, budget).pipe(Effect.ensuring(Effect.sync(() => (ParamTree.dispose(outer), x.dispose()))))
  })

/**
 * DiT's training step (diffusion loss ε-MSE + vb, gradients, clip 1.0, AdamW,
 * EMA 0.9999) as a repeatable call; `profiled` records its kernels.
 */
const trainer = (config: Config.Config, batch: number) =>
  Effect.gen(function*() {
    const compute = yield* Compute
    const objective = { _tag: "ddpm", diffusion: yield* GaussianDiffusion.make() } as const
    const hyper: Training.Hyper = { optimiser: AdamW.single(1e-4), emaDecay: 0.9999, maxGradNorm: 1 }
    const { x, labels } = benchBatch(config, batch)
    let state = Training.init(benchParams(config))
    let step = 0
    const run = (profiled: boolean) =>
      Effect.gen(function*() {
        const go = () => Training.trainStep(objective, config, hyper, state, { x, labels }, { seed: 0, step: step++ })
        const { result: next, profile } = profiled ? KernelProfile.record(go) : { result: go(), profile: undefined }
        yield* compute.read(next.loss)
        Training.dispose(state)
        tf.dispose([next.loss, next.gradNorm])
        state = next.state
        return profile
      })
    return { once: run(false), profiled: run(true), release: Effect.sync(() => (Training.dispose(state), x.dispose())) }
  })

/** DiT's training step timed. */
const trainTiming = (config: Config.Config, batch: number, budget: Budget) =>
  Effect.gen(function*() {
    const t = yield* trainer(config, batch)
    return yield* within(t.once, budget).pipe(Effect.ensuring(t.release))
  })

/** The kernel profile of `steps` training steps after one unprofiled step, per step. */
const trainProfile = (config: Config.Config, batch: number, steps: number) =>
  Effect.gen(function*() {
    const t = yield* trainer(config, batch)
    return yield* Effect.gen(function*() {
      yield* t.once
      const profiles: Array<KernelProfile.Profile> = []
      for (let i = 0; i < steps; i++) profiles.push((yield* t.profiled)!)
      return KernelProfile.average(profiles)
    }).pipe(Effect.ensuring(t.release))
  })

/** The profile as text: phases (wall time, time in kernels, calls) and the `top` slowest kernels by phase. */
const renderProfile = (p: KernelProfile.Profile, top: number): string => {
  const share = (ms: number) => `${Table.fixed((100 * ms) / p.ms, 1)}%`
  const phases = Table.render(
    ["phase", "ms/step", "share", "in kernels ms", "outside kernels ms", "kernel calls"],
    p.phases.map((ph) => [ph.phase, Table.fixed(ph.ms, 1), share(ph.ms), Table.fixed(ph.kernelMs, 1), Table.fixed(ph.ms - ph.kernelMs, 1), Table.fixed(ph.calls, 0)])
  )
  const kernels = Table.render(
    ["#", "kernel", "phase", "calls/step", "ms/step", "share", "µs/call"],
    p.kernels.slice(0, top).map((k, i) => [
      String(i + 1),
      k.kernel,
      k.phase,
      Table.fixed(k.calls, 0),
      Table.fixed(k.ms, 1),
      share(k.ms),
      Table.fixed((1000 * k.ms) / k.calls, 1)
    ])
  )
  return `step ${Table.fixed(p.ms, 1)} ms (profiled; timing every kernel adds a little)\n${phases}\n${kernels}`
}

export const dit = Command.make(
  "dit",
  {
    depth: CheckedFlags.count("depth").pipe(Flag.withDefault(28), Flag.withDescription("Mini teacher depth")),
    hidden: CheckedFlags.count("hidden").pipe(Flag.withDefault(128), Flag.withDescription("Mini teacher width (4 heads, 8×8×4 latents, patch 2)")),
    batch: CheckedFlags.count("batch").pipe(Flag.withDefault(32), Flag.withDescription("Mini teacher batch")),
    xlBatch: CheckedFlags.count("xl-batch").pipe(Flag.withDefault(32), Flag.withDescription("DiT-XL/2 and D14 batch on a hardware GPU (CPU backends: forward at batch 1)")),
    repetitions: CheckedFlags.count("repetitions").pipe(Flag.withDefault(5), Flag.withDescription("Timed calls per figure")),
    budget: CheckedFlags.count("budget-s").pipe(Flag.withDefault(60), Flag.withDescription("Seconds per figure; an XL forward estimated above it is skipped")),
    profile: CheckedFlags.natural("profile").pipe(
      Flag.withDefault(0),
      Flag.withDescription("Also print the per-kernel profile of the mini training step (mean of this many steps): phases and the slowest kernels")
    ),
    top: CheckedFlags.count("top").pipe(Flag.withDefault(25), Flag.withDescription("Kernels listed in the profile")),
    matmul: matmulFlag,
    fused: fusedFlag,
    nativeGemm: nativeGemmFlag,
    backends: backendsFlag
  },
  (o) =>
    Effect.gen(function*() {
      const mini = yield* Config.make("mini", { depth: o.depth, hiddenSize: o.hidden })
      const xl = Config.presets["DiT-XL/2"]
      const d14 = Config.presets["TinyDiT-D14"]
      const budget = { repetitions: o.repetitions, ms: o.budget * 1000 }
      yield* Console.log(
        `DiT timings, median ms per call (forward ends in a device read; train = ε-MSE + vb, grads, clip, AdamW, EMA)\n` +
          `mini = ${Config.describe(mini)}`
      )
      const rows: Array<Array<string>> = []
      yield* eachBackend(o.backends, rows, (name) =>
        withNativeGemm(o.nativeGemm, withFused(o.fused, withMatMul(o.matmul, Effect.gen(function*() {
          const c = yield* Compute
          const row = (model: string, batch: number, fwd: Benchmark.Timing | string, train: Benchmark.Timing | string, config: Config.Config) =>
            rows.push([
              name,
              model,
              String(batch),
              typeof fwd === "string" ? fwd : Table.fixed(fwd.ms, 1),
              typeof fwd === "string" ? "-" : Table.fixed(forwardFlops(config, batch) / (fwd.ms * 1e6), 1),
              typeof train === "string" ? train : Table.fixed(train.ms, 1),
              typeof train === "string" ? "-" : Table.fixed(train.cpuMs, 1),
              typeof train === "string" ? "-" : Table.fixed((batch * 1000) / train.ms, 1)
            ])
          const fwd = yield* forwardTiming(mini, o.batch, budget)
          const train = yield* trainTiming(mini, o.batch, budget)
          row("mini", o.batch, fwd, train, mini)
          if (o.profile > 0) {
            yield* Console.log(`${name}: kernel profile of the mini training step, mean of ${o.profile}\n${renderProfile(yield* trainProfile(mini, o.batch, o.profile), o.top)}`)
          }
          const rate = forwardFlops(mini, o.batch) / fwd.ms
          const large = c.hardware ? [["DiT-XL/2", xl], ["TinyDiT-D14", d14]] as const : [["DiT-XL/2", xl]] as const
          for (const [label, config] of large) {
            const batch = c.hardware ? o.xlBatch : 1
            const estimate = forwardFlops(config, batch) / rate
            if (estimate > budget.ms) {
              row(label, batch, `skipped: ~${Math.round(estimate / 1000)} s at the mini's rate`, "-", config)
              continue
            }
            // wasm's heap is 32-bit and its glue code addresses at most 2 GB.
            const streamed = c.backend === "wasm" && paramBytes(config) > 1.5e9
            const xlFwd = yield* (streamed ? streamedForwardTiming : forwardTiming)(config, batch, budget)
            row(`${label}${streamed ? " (streamed)" : ""}`, batch, xlFwd, c.hardware ? yield* trainTiming(config, batch, budget) : "CPU: forward only", config)
          }
          yield* Console.log(`${name}: ${c.device}${kernelNote(o)}`)
        })))))
      yield* Console.log(Table.render(["backend", "model", "batch", "forward ms", "fwd GFLOP/s", "train ms/step", "train cpu ms/step", "train samples/s"], rows))
    })
).pipe(Command.withDescription("Time DiT forward and training steps: the mini teacher, and DiT-XL/2 shapes, on each backend"))

