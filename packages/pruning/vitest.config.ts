import { defineProject } from "vitest/config"

export default defineProject({
  test: { name: "pruning", include: ["src/**/*.test.ts"] },
})
