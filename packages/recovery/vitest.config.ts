import { defineProject } from "vitest/config"

export default defineProject({
  test: { name: "recovery", include: ["src/**/*.test.ts"] },
})
