import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { CalibrationLoss } from "@tinyfusion/eval"
import { Config, DiT, ModelArtifact, StateDict } from "@tinyfusion/models"
import { Compute, HostTensor, ParamTree, Rng, tf, tidy } from "@tinyfusion/tensor"
import * as BlockStack from "./BlockStack.ts"
import * as DiffPruning from "./DiffPruning.ts"
import * as Fixtures from "./fixtures/Constructed.ts"
import * as Width from "./Width.ts"

/** Width 16, 4 heads of 4, MLP 32, two blocks. */
const config: Config.Config = { ...Fixtures.tiny(2), numHeads: 4 }

const flat = (tree: HostTensor.HostTree) => new Map(ParamTree.flatten(tree, HostTensor.isHostTensor))
const widths = (c: Config.Config) => [c.hiddenSize, c.numHeads, Config.headDim(c), Config.mlpHidden(c)]

/** Keys whose weights Taylor importance scores: Linear and Conv weights (not biases, the label table or pos_embed). */
const scored = (key: string) => key.endsWith(".weight") && key !== "y_embedder.embedding_table.weight"

/** Per key, the element indices that removing the units of `removed` drops (what Width.cut leaves out: the fixture zeroes them). */
function dropped(c: Config.Config, removed: Partial<Width.Kept>): Map<string, ReadonlyArray<number>> {
  const ones = ParamTree.unflatten(StateDict.referenceShapes(c).map(([k, shape]) =>
    [k, HostTensor.float32(shape, new Float32Array(HostTensor.numel(shape)).fill(1))] as const
  ))
  const zeroed = Fixtures.withZeroUnits(c, ones, { hidden: [], conditioning: [], timestep: [], heads: [], mlp: [], ...removed })
  return new Map([...flat(zeroed)].map(([k, t]) => [k, [...t.data.keys()].filter((i) => t.data[i] === 0)] as const))
}

describe("Width", () => {
  it("a ratio of parameters maps to one share of every width: DiT-XL/2 at 50% and 75% has the paper's 338 M and 169 M", () => {
    const xl = Config.presets["DiT-XL/2"]
    const half = Width.forRatio(xl, 0.5)
    assert.deepStrictEqual(widths(half.config), [816, 11, 72, 3264])
    assert.strictEqual(half.parameters, 337_014_176)
    assert.strictEqual(ModelArtifact.parameterCount(half.config), half.parameters)
    const quarter = Width.forRatio(xl, 0.75)
    assert.deepStrictEqual(widths(quarter.config), [576, 8, 72, 2304])
    assert.strictEqual(quarter.parameters, 169_354_400)
    assert.strictEqual(quarter.share, 0.5)
    // The mini teacher (28 × 128, 4 heads of 32, MLP 512) at 50%: 88 wide, 3 heads, MLP 352.
    const mini = Config.presets.mini
    const miniHalf = Width.forRatio(mini, 0.5)
    assert.deepStrictEqual(widths(miniHalf.config), [88, 3, 32, 352])
    assert.strictEqual(miniHalf.config.depth, 28)
    // Nearest: the neighbouring residual widths are further from half of the 8,403,488 parameters.
    const target = ModelArtifact.parameterCount(mini) / 2
    const distance = (hidden: number) => Math.abs(ModelArtifact.parameterCount(Width.narrowed(mini, hidden)) - target)
    assert.isBelow(distance(88), distance(84))
    assert.isBelow(distance(88), distance(92))
    assert.deepStrictEqual(widths(Width.forRatio(mini, 0).config), [128, 4, 32, 512])
    assert.throws(() => Width.forRatio(mini, 1), /in \[0, 1\)/)
  })

  it("Taylor importance of every unit is Σ|w·g| over exactly the scored weights that removing the unit cuts (float64)", () => {
    const w = flat(Fixtures.random(config, 1))
    const g = flat(Fixtures.random(config, 2))
    const scores = Width.taylor(config, w, g)
    const expected = (removed: Partial<Width.Kept>) => {
      let sum = 0
      for (const [key, elements] of dropped(config, removed)) {
        if (!scored(key)) continue
        const a = w.get(key)!.data
        const b = g.get(key)!.data
        for (const i of elements) sum += Math.abs(a[i]! * b[i]!)
      }
      return sum
    }
    const close = (got: number, want: number, what: string) => assert.closeTo(got, want, 1e-9 * want, what)
    for (let j = 0; j < config.hiddenSize; j++) {
      close(scores.hidden[j]!, expected({ hidden: [j] }), `hidden ${j}`)
      close(scores.conditioning[j]!, expected({ conditioning: [j] }), `conditioning ${j}`)
      close(scores.timestep[j]!, expected({ timestep: [j] }), `timestep ${j}`)
    }
    for (let l = 0; l < config.depth; l++) {
      const only = <A>(x: A) => Array.from({ length: config.depth }, (_, i) => (i === l ? x : []))
      for (let h = 0; h < config.numHeads; h++) close(scores.heads[l]![h]!, expected({ heads: only([h]) }), `block ${l} head ${h}`)
      for (let m = 0; m < Config.mlpHidden(config); m++) close(scores.mlp[l]![m]!, expected({ mlp: only([m]) }), `block ${l} mlp ${m}`)
    }
    // A head is 3 × 4 rows of qkv (16 wide) and 4 columns of proj: 3·4·16 + 16·4 scored weights.
    assert.strictEqual(dropped(config, { heads: [[2], []] }).get("blocks.0.attn.qkv.weight")!.length, 3 * 4 * 16)
    assert.strictEqual(dropped(config, { heads: [[2], []] }).get("blocks.0.attn.proj.weight")!.length, 16 * 4)
    // A hidden channel takes 6 rows of every block's adaLN output (shift, scale, gate of both branches).
    assert.strictEqual(dropped(config, { hidden: [3] }).get("blocks.1.adaLN_modulation.1.weight")!.length, 6 * 16)
  })

  it.effect("the units that are zero are the ones removed, and the narrower model computes what the full one does", () =>
    Effect.gen(function*() {
      const zeroed = { hidden: [], conditioning: [], timestep: [], heads: [[1], [3]], mlp: [[0, 5, 9, 30], [2, 3, 17, 31]] }
      const host = Fixtures.withZeroUnits(config, Fixtures.random(config, 3), zeroed)
      const params = HostTensor.treeToTensors(host)
      const objective = yield* BlockStack.objective("dit", config)
      const stack = BlockStack.dit(objective, config)
      const latents = Rng.normal(Rng.stream(4, "test/latents"), 0, 6 * 4 * 4 * 4)
      const set = CalibrationLoss.make(objective, config, { latents, labels: [0, 1, 2, 0, 1, 2], shape: [6, 4, 4, 4] }, 5)
      const { grads } = yield* DiffPruning.gradientAt(stack, params, set, 250, 4)
      const scores = Width.taylor(config, flat(host), flat(yield* HostTensor.treeFromTensors(grads)))
      ParamTree.dispose(grads)
      for (const [l, h] of [[0, 1], [1, 3]] as const) assert.strictEqual(scores.heads[l]![h], 0)
      assert.isTrue(scores.heads.every((s, l) => s.every((v, h) => h === zeroed.heads[l]![0] || v > 0)))
      const kept = Width.select(scores, { ...config, numHeads: 3, headDim: 4, mlpHidden: 28 })
      assert.deepStrictEqual(kept.heads, [[0, 2, 3], [0, 1, 2]])
      assert.deepStrictEqual(kept.mlp, zeroed.mlp.map((z) => Width.all(config).mlp[0]!.filter((m) => !z.includes(m))))
      assert.deepStrictEqual(kept.hidden, Width.all(config).hidden)
      const narrow = Width.narrow(config, host, kept)
      assert.deepStrictEqual(widths(narrow.config), [16, 3, 4, 28])
      const x = tf.tensor4d(latents.subarray(0, 4 * 64), [4, 4, 4, 4])
      const inputs = { x, t: [0, 250, 600, 999], y: [0, 1, 2, 3] }
      const full = tidy(() => DiT.forward(config, params, inputs)).dataSync()
      const small = HostTensor.treeToTensors(narrow.params)
      const out = tidy(() => DiT.forward(narrow.config, small, inputs)).dataSync()
      let worst = 0
      full.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - out[i]!))))
      assert.isBelow(worst, 1e-5, `max |narrow − full| = ${worst}`)
      assert.isAbove(Math.max(...full.map(Math.abs)), 0.1)
      assert.throws(() => Width.narrow(config, host, { ...kept, mlp: [kept.mlp[0]!, kept.mlp[1]!.slice(1)] }), /different numbers of mlp/)
      assert.throws(() => Width.narrow(config, host, { ...kept, hidden: kept.hidden.slice(1) }), /one hidden_size/)
      tf.dispose([x])
      ParamTree.dispose([params, small])
    }).pipe(Effect.provide(Compute.wasm)))

  it.effect("the accumulated gradient is the loss's: Σ w·∂L/∂w over a unit's weights equals a float64 central difference", () =>
    Effect.gen(function*() {
      // Without learn_sigma the loss is the ε-MSE, whose gradient is its derivative (vb detaches the mean).
      const c: Config.Config = { ...config, learnSigma: false }
      const host = Fixtures.random(c, 6)
      const params = HostTensor.treeToTensors(host)
      const objective = yield* BlockStack.objective("dit", c)
      const stack = BlockStack.dit(objective, c)
      const latents = Rng.normal(Rng.stream(7, "test/latents"), 0, 6 * 64)
      const base = CalibrationLoss.make(objective, c, { latents, labels: [0, 1, 2, 3, 1, 2], shape: [6, 4, 4, 4] }, 8)
      const time = 300
      // Batches of 4: the set's gradient is summed over a batch of 4 and one of 2.
      const at = yield* DiffPruning.gradientAt(stack, params, base, time, 4)
      const g = flat(yield* HostTensor.treeFromTensors(at.grads))
      ParamTree.dispose(at.grads)
      const set = { ...base, t: base.t.map(() => time) }
      const lossOf = (tree: HostTensor.HostTree) =>
        Effect.acquireUseRelease(
          Effect.sync(() => HostTensor.treeToTensors(tree)),
          (p) => CalibrationLoss.evaluate(objective, c, p, set),
          (p) => Effect.sync(() => ParamTree.dispose(p))
        )
      assert.closeTo(at.loss, yield* lossOf(host), 1e-5)
      const w = flat(host)
      const units: ReadonlyArray<readonly [string, Partial<Width.Kept>]> = [
        ["head 1 of block 0", { heads: [[1], []] }],
        ["MLP channel 7 of block 1", { mlp: [[], [7]] }],
        ["hidden channel 3", { hidden: [3] }],
        ["conditioning channel 5", { conditioning: [5] }],
        ["timestep channel 9", { timestep: [9] }]
      ]
      const alpha = 1e-2
      for (const [name, removed] of units) {
        const elements = [...dropped(c, removed)].filter(([k]) => scored(k) && g.has(k))
        let directional = 0
        for (const [k, idx] of elements) for (const i of idx) directional += w.get(k)!.data[i]! * g.get(k)!.data[i]!
        const scaled = (factor: number) =>
          ParamTree.unflatten([...w].map(([k, t]) => {
            const idx = elements.find(([key]) => key === k)?.[1]
            if (idx === undefined) return [k, t] as const
            const data = Float32Array.from(t.data)
            for (const i of idx) data[i] = data[i]! * factor
            return [k, HostTensor.float32(t.shape, data)] as const
          }))
        const difference = ((yield* lossOf(scaled(1 + alpha))) - (yield* lossOf(scaled(1 - alpha)))) / (2 * alpha)
        assert.isAbove(Math.abs(directional), 1e-3, name)
        assert.closeTo(directional, difference, 2e-4 + 0.01 * Math.abs(directional), name)
      }
      ParamTree.dispose(params)
    }).pipe(Effect.provide(Compute.wasm)))
})
