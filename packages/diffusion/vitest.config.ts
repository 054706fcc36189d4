import { defineProject } from "vitest/config"

export default defineProject({
  test: { name: "diffusion", include: ["src/**/*.test.ts"] },
})
