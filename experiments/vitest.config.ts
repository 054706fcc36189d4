import { defineProject } from "vitest/config"

export default defineProject({
  test: { name: "experiments", include: ["src/**/*.test.ts"] },
})
