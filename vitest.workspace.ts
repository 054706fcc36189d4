// The test projects: one per package, each running the tests that sit beside its code.
export const projects = [
  "packages/*",
  "experiments",
] as const
