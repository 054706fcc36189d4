export * as Plot from "./Plot.ts"
