export * as Alignment from "./Alignment.ts"
export * as Distill from "./Distill.ts"
export * as Recovery from "./Recovery.ts"
export * as RecoveryStage from "./RecoveryStage.ts"
