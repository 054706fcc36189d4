/**
 * Parameters are data: a nested record (or array) of tensors whose flattened
 * dotted paths are the PyTorch state_dict keys. Models are pure functions of a
 * tree; optimisers, LoRA, pruning and checkpoints are transforms of trees.
 *
 * Leaves are generic so the same functions serve device tensors (`tf.Tensor`)
 * and host tensors (`HostTensor`).
 */
import { tf } from "./tf.ts"

export type Tree<L> = L | ReadonlyArray<Tree<L>> | { readonly [key: string]: Tree<L> }
export type ParamTree = Tree<tf.Tensor>

export type Flat<L> = ReadonlyArray<readonly [key: string, leaf: L]>

const isTensor = (x: unknown): x is tf.Tensor => x instanceof tf.Tensor

/** Flattens a tree to (dotted key, leaf) pairs in a stable depth-first order. */
export function flatten<L>(tree: Tree<NoInfer<L>>, isLeaf: (x: unknown) => x is L, prefix = ""): Array<[string, L]> {
  if (isLeaf(tree)) return [[prefix, tree]]
  const out: Array<[string, L]> = []
  const entries: Array<[string, Tree<L>]> = Array.isArray(tree)
    ? tree.map((child, i) => [String(i), child])
    : Object.entries(tree as Record<string, Tree<L>>)
  for (const [key, child] of entries) {
    out.push(...flatten(child, isLeaf, prefix === "" ? key : `${prefix}.${key}`))
  }
  return out
}

/** Tensor trees flattened: the state_dict view. */
export const flattenTensors = (tree: ParamTree): Array<[string, tf.Tensor]> => flatten(tree, isTensor)

/**
 * Rebuilds a tree from dotted keys. A level whose keys are exactly 0..n-1
 * becomes an array (e.g. `blocks`); any other level is a record (e.g.
 * `t_embedder.mlp` with keys 0 and 2).
 */
export function unflatten<L>(entries: Iterable<readonly [string, L]>): Tree<L> {
  const root: Level<L> = new Map()
  for (const [key, leaf] of entries) {
    const parts = key.split(".")
    let level = root
    for (const part of parts.slice(0, -1)) {
      const next = level.get(part)
      if (next === undefined) level.set(part, (level = new Map()))
      else if (next instanceof Map) level = next
      else throw new Error(`key ${key} nests under the leaf ${part}`)
    }
    const last = parts[parts.length - 1]!
    if (level.has(last)) throw new Error(`duplicate key ${key}`)
    level.set(last, { leaf })
  }
  return build(root)
}

type Level<L> = Map<string, Level<L> | { readonly leaf: L }>

function build<L>(level: Level<L>): Tree<L> {
  const keys = [...level.keys()]
  const child = (k: string): Tree<L> => {
    const v = level.get(k)!
    return v instanceof Map ? build(v) : v.leaf
  }
  // Keys may arrive in any order (safetensors sorts them: 0, 1, 10, 11, …, 2).
  const isArray = keys.length > 0 && keys.every((k) => /^(0|[1-9]\d*)$/.test(k) && Number(k) < keys.length)
  return isArray
    ? Array.from({ length: keys.length }, (_, i) => child(String(i)))
    : Object.fromEntries(keys.map((k) => [k, child(k)]))
}

/**
 * A tree shaped like `like` from (key, tensor) pairs with exactly its keys
 * (what an optimiser or a gradient returns for a parameter tree): the
 * result has the type of `like`, checked key by key.
 */
export function rebuild<T extends ParamTree>(like: T, entries: ReadonlyArray<readonly [string, tf.Tensor]>): T {
  const keys = flattenTensors(like).map(([k]) => k)
  if (entries.length !== keys.length || entries.some(([k], i) => k !== keys[i])) {
    throw new Error(`rebuilt tree has keys [${entries.map(([k]) => k).join(", ")}], not [${keys.join(", ")}]`)
  }
  // Same keys in the same order as `like`: unflatten gives back its shape.
  return unflatten(entries) as T
}

/** Applies f to every leaf, keeping the structure. */
export function map<A, B>(tree: Tree<NoInfer<A>>, isLeaf: (x: unknown) => x is A, f: (leaf: A, key: string) => B): Tree<B> {
  const go = (node: Tree<A>, prefix: string): Tree<B> => {
    if (isLeaf(node)) return f(node, prefix)
    const join = (k: string) => (prefix === "" ? k : `${prefix}.${k}`)
    if (Array.isArray(node)) return node.map((child, i) => go(child, join(String(i))))
    return Object.fromEntries(
      Object.entries(node as Record<string, Tree<A>>).map(([k, child]) => [k, go(child, join(k))])
    )
  }
  return go(tree, "")
}

/** Tensor tree map. */
export const mapTensors = <B>(tree: ParamTree, f: (t: tf.Tensor, key: string) => B): Tree<B> => map(tree, isTensor, f)

/** A tensor for every tensor: the same structure, so the same type. */
export const mapLeaves = <T extends ParamTree>(tree: T, f: (t: tf.Tensor, key: string) => tf.Tensor): T =>
  // map keeps every record and array as it is, replacing leaves only.
  map(tree, isTensor, f) as T

/**
 * Combines trees of identical structure leaf by leaf (e.g. params and grads).
 * Fails on a structural mismatch, naming the first differing key.
 */
export function zipWith<R>(
  trees: ReadonlyArray<ParamTree>,
  f: (leaves: ReadonlyArray<tf.Tensor>, key: string) => R
): Tree<R> {
  const flats = trees.map((t) => new Map(flattenTensors(t)))
  const keys = [...flats[0]!.keys()]
  for (const [i, flat] of flats.entries()) {
    if (flat.size !== keys.length) throw new Error(`tree ${i} has ${flat.size} leaves, tree 0 has ${keys.length}`)
    for (const k of keys) if (!flat.has(k)) throw new Error(`tree ${i} has no leaf ${k}`)
  }
  return unflatten(keys.map((k) => [k, f(flats.map((flat) => flat.get(k)!), k)] as const))
}

/** Number of scalar parameters. */
export const size = (tree: ParamTree): number => flattenTensors(tree).reduce((n, [, t]) => n + t.size, 0)

/** Releases every tensor of the tree. */
export const dispose = (tree: ParamTree): void => {
  for (const [, t] of flattenTensors(tree)) t.dispose()
}

/** The tensors of a tree, for tf.tidy / endScope keep-lists. */
export const leaves = (tree: ParamTree): Array<tf.Tensor> => flattenTensors(tree).map(([, t]) => t)

/** Copies every leaf (the copies survive disposal of the originals). */
export const clone = <T extends ParamTree>(tree: T): T => mapLeaves(tree, (t) => tf.clone(t))

/** The sub-tree at a dotted path. */
export function at(tree: ParamTree, path: string): ParamTree {
  let node: ParamTree = tree
  for (const part of path.split(".")) {
    if (isTensor(node)) throw new Error(`path ${path} runs past a tensor`)
    const next: ParamTree | undefined = Array.isArray(node)
      ? (node as ReadonlyArray<ParamTree>)[Number(part)]
      : (node as Record<string, ParamTree>)[part]
    if (next === undefined) throw new Error(`no ${part} in path ${path}`)
    node = next
  }
  return node
}
