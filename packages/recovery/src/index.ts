export * as Alignment from "./Alignment.ts"
export * as Distill from "./Distill.ts"
