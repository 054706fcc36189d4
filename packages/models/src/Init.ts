/**
 * DiT.initialize_weights: Xavier-uniform Linear weights (the patch conv as its
 * 2-D view [D, C·p·p]) and zero biases; N(0, 0.02) for the label table and
 * both t-MLP weights; zero adaLN output layers and final linear; the fixed
 * sin-cos position embedding. Built on the host so that a seed gives the same
 * bits on every backend; every key draws from its own Rng stream.
 */
import { HostTensor, ParamTree, Rng } from "@tinyfusion/tensor"
import * as StateDict from "./StateDict.ts"
import * as Config from "./Config.ts"
import * as Embeddings from "./Embeddings.ts"

type Rule = "xavier" | "normal" | "zeros" | "position"

/** Which initialiser the reference applies to each state_dict key. */
const rule = (key: string): Rule => {
  if (key === "pos_embed") return "position"
  if (key.endsWith(".bias")) return "zeros"
  if (key.includes("adaLN_modulation") || key.startsWith("final_layer.linear")) return "zeros"
  if (key.startsWith("t_embedder.") || key.startsWith("y_embedder.")) return "normal"
  return "xavier"
}

const values = (config: Config.Config, key: string, shape: ReadonlyArray<number>, seed: number): Float32Array => {
  const n = HostTensor.numel(shape)
  const stream = Rng.stream(seed, `dit/init/${key}`)
  switch (rule(key)) {
    case "position":
      return Embeddings.positionEmbedding(config.hiddenSize, Config.gridSize(config))
    case "zeros":
      return new Float32Array(n)
    case "normal":
      return Rng.normal(stream, 0, n).map((v) => v * 0.02)
    case "xavier": {
      // fan_out = dim 0, fan_in = the product of the rest (torch's 2-D view of a conv weight).
      const fanOut = shape[0]!
      const fanIn = n / fanOut
      const bound = Math.sqrt(6 / (fanIn + fanOut))
      return Rng.uniform(stream, 0, n).map((u) => (2 * u - 1) * bound)
    }
  }
}

/** The reference initialisation as host tensors under the reference keys. */
export const host = (config: Config.Config, seed: number): HostTensor.HostTree =>
  ParamTree.unflatten(StateDict.referenceShapes(config).map(([key, shape]) =>
    [key, HostTensor.float32(shape, values(config, key, shape, seed))] as const
  ))

/** The reference initialisation on the active backend. */
export const params = (config: Config.Config, seed: number) => HostTensor.treeToTensors(host(config, seed))
