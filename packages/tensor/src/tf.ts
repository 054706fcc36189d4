/**
 * The one TensorFlow.js namespace of the project. The union package registers
 * the gradients of every op (BatchMatMul's is replaced by one that handles
 * broadcast batch dims); backends are registered by the Compute layers.
 */
import * as tf from "@tensorflow/tfjs"
import { batchMatMulGradConfig } from "./MatMulGradient.ts"

tf.registerGradient(batchMatMulGradConfig)

export { tf }
export type { Tensor, TensorContainer } from "@tensorflow/tfjs"

/**
 * tf.tidy for any result shape: every tensor created by f is released except
 * those reachable from its result (tfjs walks nested objects and arrays;
 * its TensorContainer type just does not admit readonly arrays or our trees).
 */
export const tidy = <A>(f: () => A): A => tf.tidy(f as () => tf.TensorContainer) as A
