import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Compute } from "./Compute.ts"
import * as HostTensor from "./HostTensor.ts"
import * as ParamTree from "./ParamTree.ts"
import { tf } from "./tf.ts"

const host = (...values: Array<number>) => HostTensor.float32([values.length], new Float32Array(values))

describe("ParamTree", () => {
  it("flatten gives state_dict keys; unflatten restores arrays and records", () => {
    const blocks = Array.from({ length: 12 }, (_, i) => ({ attn: { qkv: { weight: host(i) } } }))
    const tree = { t_embedder: { mlp: { "0": { weight: host(1) }, "2": { weight: host(2) } } }, blocks, pos_embed: host(0) }
    const flat = ParamTree.flatten(tree, HostTensor.isHostTensor)
    assert.deepStrictEqual(flat.slice(0, 3).map(([k]) => k), ["t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight", "blocks.0.attn.qkv.weight"])
    // Sorted keys put blocks.10 before blocks.2, as a safetensors file does; unflatten must not care.
    const sorted = [...flat].sort(([a], [b]) => (a < b ? -1 : 1))
    const back = ParamTree.unflatten(sorted) as typeof tree
    assert.isTrue(Array.isArray(back.blocks))
    assert.strictEqual(back.blocks[10]!.attn.qkv.weight.data[0], 10)
    assert.isFalse(Array.isArray(back.t_embedder.mlp))
    assert.deepStrictEqual(Object.keys(back.t_embedder.mlp), ["0", "2"])
    assert.throws(() => ParamTree.unflatten([["a.b", host(1)], ["a.b", host(2)]]), /duplicate key a.b/)
    assert.throws(() => ParamTree.unflatten([["a", host(1)], ["a.b", host(2)]]), /nests under the leaf a/)
  })

  it.effect("tensor trees: zipWith, size, at, and a host round trip", () =>
    Effect.gen(function*() {
      const tree = { a: tf.tensor([1, 2]), b: [tf.tensor([[3]]), tf.tensor([4, 5, 6])] }
      assert.strictEqual(ParamTree.size(tree), 6)
      const sum = ParamTree.zipWith([tree, tree], ([x, y]) => tf.add(x!, y!)) as ParamTree.ParamTree
      assert.deepStrictEqual(Array.from((ParamTree.at(sum, "b.1") as tf.Tensor).dataSync()), [8, 10, 12])
      assert.throws(() => ParamTree.zipWith([tree, { a: tree.a }], ([x]) => x), /has 1 leaves/)
      const hostTree = yield* HostTensor.treeFromTensors(tree)
      const again = HostTensor.treeToTensors(hostTree)
      assert.deepStrictEqual(ParamTree.flattenTensors(again).map(([k, t]) => [k, t.shape]), [["a", [2]], ["b.0", [1, 1]], ["b.1", [3]]])
    }).pipe(Effect.provide(Compute.cpu)))
})
