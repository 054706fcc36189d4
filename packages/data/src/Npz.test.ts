import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Zip } from "@tinyfusion/tensor"
import * as Npy from "./Npy.ts"
import * as Npz from "./Npz.ts"

// Written by parity/write_fixtures.py with Debian's python3-numpy (np.savez, np.savez_compressed, write_array).
const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/npz/${name}`, import.meta.url))

/** arr_0 of reference.npz: element i is (7 i) mod 256. */
const pattern = (from: number, n: number) => Array.from({ length: n }, (_, i) => ((from + i) * 7) % 256)

const tempDir = Effect.promise(() => fs.mkdtemp(path.join(os.tmpdir(), "npz-")))

describe("Npz", () => {
  it.effect("an ADM-style reference batch: uint8 images read whole and by rows, float64 statistics", () =>
    Effect.scoped(Effect.gen(function*() {
      const npz = yield* Npz.open(fixture("reference.npz"))
      assert.deepStrictEqual([...npz.names].sort(), ["arr_0", "mu", "mu_s", "sigma", "sigma_s"])
      const images = yield* npz.read("arr_0")
      assert.strictEqual(images.dtype, "uint8")
      assert.deepStrictEqual(images.shape, [6, 8, 8, 3])
      assert.deepStrictEqual([...images.data], pattern(0, 6 * 192))
      const rows = yield* npz.rows("arr_0")
      assert.strictEqual(rows.rowLength, 192)
      assert.deepStrictEqual([...(yield* rows.next(4))], pattern(0, 4 * 192))
      assert.deepStrictEqual([...(yield* rows.next(2))], pattern(4 * 192, 2 * 192))
      assert.match((yield* Effect.flip(rows.next(1))).message, /asked for 1 rows, 0 are left/)
      const sigma = yield* npz.read("sigma")
      assert.strictEqual(sigma.dtype, "float64")
      assert.deepStrictEqual(sigma.shape, [5, 5])
      for (let i = 0; i < 5; i++) for (let j = 0; j < 5; j++) assert.strictEqual(sigma.data[i * 5 + j], sigma.data[j * 5 + i])
      assert.deepStrictEqual((yield* npz.header("mu_s")).shape, [3])
      assert.match((yield* Effect.flip(npz.read("labels"))).message, /no array labels \(it holds arr_0, mu, sigma, mu_s, sigma_s\)/)
    })))

  it.effect("compressed entries, int64 and 0-d arrays; Fortran order, big-endian and strings are refused by name", () =>
    Effect.scoped(Effect.gen(function*() {
      const npz = yield* Npz.open(fixture("mixed.npz"))
      const f4 = yield* npz.read("f4")
      assert.deepStrictEqual([f4.dtype, f4.shape, [...f4.data]], ["float32", [1, 3], [1.5, -2, 3.25]])
      assert.deepStrictEqual([...(yield* npz.read("i8")).data], [1n, -2n, 2n ** 40n])
      const scalar = yield* npz.read("scalar")
      assert.deepStrictEqual([scalar.shape, [...scalar.data]], [[], [2.5]])
      assert.match((yield* Effect.flip(npz.read("fortran"))).message, /mixed\.npz:fortran: the array is in Fortran order/)
      assert.match((yield* Effect.flip(npz.read("big"))).message, /dtype >f8 is not read/)
      assert.match((yield* Effect.flip(npz.read("text"))).message, /dtype <U1 is not read/)
    })))

  it.effect("format 2.0 headers (4-byte length); our 1.0 header is byte for byte NumPy's", () =>
    Effect.scoped(Effect.gen(function*() {
      const v2 = new Uint8Array(yield* Effect.promise(() => fs.readFile(fixture("v2.npy"))))
      const header = Npy.parseHeader(v2, "v2.npy")
      assert.deepStrictEqual(header, { dtype: "int32", shape: [5], dataOffset: 128 })
      assert.deepStrictEqual([...new Int32Array(v2.slice(128).buffer)], [0, 1, 2, 3, 4])
      const zip = yield* Zip.open(fixture("reference.npz"))
      const numpy = yield* zip.read("arr_0.npy")
      const ours = Npy.header("uint8", [6, 8, 8, 3])
      assert.deepStrictEqual([...ours], [...numpy.subarray(0, ours.length)])
      assert.deepStrictEqual([...Npy.header("float64", [5])], [...(yield* zip.read("mu.npy")).subarray(0, 128)])
    })))

  it.effect("write streams chunks into a stored archive that reads back; a short entry leaves no file", () =>
    Effect.scoped(Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "samples.npz")
      const images = Uint8Array.from(pattern(0, 3 * 2 * 2 * 3))
      yield* Npz.write(file, [{
        name: "arr_0",
        dtype: "uint8",
        shape: [3, 2, 2, 3],
        fill: (push) => Effect.andThen(push(images.subarray(0, 12)), push(images.subarray(12)))
      }])
      const npz = yield* Npz.open(file)
      assert.deepStrictEqual(npz.names, ["arr_0"])
      const back = yield* npz.read("arr_0")
      assert.deepStrictEqual([back.dtype, back.shape, [...back.data]], ["uint8", [3, 2, 2, 3], [...images]])

      const short = path.join(dir, "short.npz")
      const error = yield* Effect.flip(Npz.write(short, [{ name: "arr_0", dtype: "uint8", shape: [2, 2], fill: (push) => push(Uint8Array.of(1, 2, 3)) }]))
      assert.match(error.message, /arr_0: 3 bytes written for uint8\[2, 2\], which needs 4/)
      assert.deepStrictEqual(yield* Effect.promise(() => fs.readdir(dir)), ["samples.npz"])
    })))
})
