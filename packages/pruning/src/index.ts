export * as Scheme from "./Scheme.ts"
export * as Gumbel from "./Gumbel.ts"
