/**
 * A per-kernel profile of synchronous work on the active backend: every
 * kernel the engine dispatches (registered kernels; the kernels a kernel
 * calls inside itself count as its own time) with its call count and time,
 * split by phase — the forward of a gradient (tf.grads and friends), its
 * backward, and everything outside one (the optimiser) — and each phase's
 * wall time, so the engine's own cost (tensor bookkeeping, tape, tidy) is the
 * part of a phase that no kernel accounts for.
 *
 * Timing wraps the registered kernel functions of the active backend for the
 * duration of `record`; it suits backends that run kernels synchronously
 * (wasm, cpu). On WebGPU a kernel's time is only its dispatch.
 */
import { tf } from "./tf.ts"

export type Phase = "forward" | "backward" | "other"

export interface KernelRow {
  readonly kernel: string
  readonly phase: Phase
  readonly calls: number
  readonly ms: number
}

export interface PhaseRow {
  readonly phase: Phase
  /** Wall time of the phase. */
  readonly ms: number
  /** Time inside kernels. */
  readonly kernelMs: number
  readonly calls: number
}

export interface Profile {
  /** Wall time of the recorded function. */
  readonly ms: number
  /** Slowest first. */
  readonly kernels: ReadonlyArray<KernelRow>
  readonly phases: ReadonlyArray<PhaseRow>
}

interface Engine {
  gradients: (f: () => tf.Tensor, xs: Array<tf.Tensor>, dy?: tf.Tensor, allowNoGradients?: boolean) => unknown
}

/**
 * Runs f once with every kernel of the active backend timed. Not reentrant;
 * the original kernels are back in place when it returns or throws.
 */
export function record<A>(f: () => A): { readonly result: A; readonly profile: Profile } {
  const backend = tf.getBackend()
  const configs = tf.getKernelsForBackend(backend)
  const rows = new Map<string, { kernel: string; phase: Phase; calls: number; ms: number }>()
  const phaseMs: Record<Phase, number> = { forward: 0, backward: 0, other: 0 }
  let phase: Phase = "other"
  let since = performance.now()
  const enter = (next: Phase) => {
    const now = performance.now()
    phaseMs[phase] += now - since
    since = now
    phase = next
  }
  // Only the outermost kernel is timed: a kernel that runs others through the engine (none do today) is counted once.
  let depth = 0
  const timed = (config: tf.KernelConfig): tf.KernelConfig => ({
    ...config,
    kernelFunc: (args) => {
      if (depth > 0) return config.kernelFunc(args)
      depth++
      const start = performance.now()
      try {
        return config.kernelFunc(args)
      } finally {
        const ms = performance.now() - start
        depth--
        const key = `${phase}/${config.kernelName}`
        const row = rows.get(key) ?? { kernel: config.kernelName, phase, calls: 0, ms: 0 }
        row.calls++
        row.ms += ms
        rows.set(key, row)
      }
    }
  })
  const swap = (with_: (c: tf.KernelConfig) => tf.KernelConfig) => {
    for (const c of configs) {
      tf.unregisterKernel(c.kernelName, c.backendName)
      tf.registerKernel(with_(c))
    }
  }
  const engine = tf.engine() as unknown as Engine
  const gradients = engine.gradients
  engine.gradients = function(this: Engine, g, xs, dy, allowNoGradients) {
    const outer = phase
    try {
      return gradients.call(this, () => {
        enter("forward")
        const y = g()
        enter("backward")
        return y
      }, xs, dy, allowNoGradients)
    } finally {
      enter(outer)
    }
  }
  swap(timed)
  const start = performance.now()
  try {
    const result = f()
    enter("other")
    const ms = performance.now() - start
    const kernels = [...rows.values()].sort((a, b) => b.ms - a.ms)
    const phases = (["forward", "backward", "other"] as const).map((p) => {
      const own = kernels.filter((k) => k.phase === p)
      return { phase: p, ms: phaseMs[p], kernelMs: own.reduce((s, k) => s + k.ms, 0), calls: own.reduce((s, k) => s + k.calls, 0) }
    })
    return { result, profile: { ms, kernels, phases } }
  } finally {
    engine.gradients = gradients
    swap((c) => c)
  }
}

/** The profiles of several runs as one, every figure per run. */
export function average(profiles: ReadonlyArray<Profile>): Profile {
  const n = profiles.length
  if (n === 0) throw new Error("average of no profiles")
  const rows = new Map<string, KernelRow>()
  for (const p of profiles) {
    for (const k of p.kernels) {
      const key = `${k.phase}/${k.kernel}`
      const row = rows.get(key) ?? { ...k, calls: 0, ms: 0 }
      rows.set(key, { ...row, calls: row.calls + k.calls / n, ms: row.ms + k.ms / n })
    }
  }
  const phases = profiles[0]!.phases.map((ph, i) => ({
    phase: ph.phase,
    ms: profiles.reduce((s, p) => s + p.phases[i]!.ms, 0) / n,
    kernelMs: profiles.reduce((s, p) => s + p.phases[i]!.kernelMs, 0) / n,
    calls: profiles.reduce((s, p) => s + p.phases[i]!.calls, 0) / n
  }))
  return {
    ms: profiles.reduce((s, p) => s + p.ms, 0) / n,
    kernels: [...rows.values()].sort((a, b) => b.ms - a.ms),
    phases
  }
}
