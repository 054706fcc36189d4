/**
 * The labelled images a run trains and evaluates on, as a service. Each
 * layer loads one source: Fashion-MNIST from its IDX files, a folder of
 * class-per-subfolder images (ImageNet-like), or synthetic fixtures for tests.
 */
import { Context, Effect, Layer, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Idx from "./Idx.ts"
import * as ImageFolder from "./ImageFolder.ts"
import * as Images from "./Images.ts"
import * as Synthetic from "./Synthetic.ts"

export class DatasetError extends Schema.TaggedError<DatasetError>()("DatasetError", {
  dataset: Schema.String,
  path: Schema.String,
  reason: Schema.String,
  /** How to get a usable copy. */
  hint: Schema.String
}) {
  override get message(): string {
    return `${this.dataset} at ${this.path}: ${this.reason}. ${this.hint}`
  }
}

export const defaultFashionMnistDir = "/usr/share/datasets/fashion-mnist"

const fashionHint =
  "Install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), " +
  "or pass --data DIR pointing at a folder with the four IDX .gz files " +
  "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"

export const fashionMnistFiles = {
  trainImages: "train-images-idx3-ubyte.gz",
  trainLabels: "train-labels-idx1-ubyte.gz",
  testImages: "t10k-images-idx3-ubyte.gz",
  testLabels: "t10k-labels-idx1-ubyte.gz"
} as const

export class Dataset extends Context.Service<Dataset, {
  readonly name: string
  readonly classes: number
  /** Read in batches (`Images.Source`): a stage holds the batch it reads, or loads the split whole where it samples at random. */
  readonly train: Images.Source
  readonly test: Images.Source
}>()("@tinyfusion/data/Dataset") {
  /**
   * Fashion-MNIST from `dir` (default /usr/share/datasets/fashion-mnist),
   * each 28×28 image zero-padded to `size` × `size` (32 for the mini preset).
   */
  static fashionMnist(options: { readonly dir?: string; readonly size?: number } = {}): Layer.Layer<Dataset, DatasetError> {
    return Layer.effect(Dataset, loadFashionMnist(options.dir ?? defaultFashionMnistDir, options.size ?? 32))
  }

  /**
   * Class-per-subfolder PNG/JPEG images, centre-cropped and resized as ADM
   * (DiT's center_crop_arr), read in batches as the stages ask for them
   * (ImageNet's 1.28 M training images are never all in memory). `test` may
   * be omitted: the test split is then empty.
   */
  static imageFolder(options: ImageFolder.Options & { readonly test?: string }): Layer.Layer<Dataset, DatasetError> {
    return Layer.effect(
      Dataset,
      Effect.gen(function*() {
        const train = yield* ImageFolder.open(options)
        const test = options.test === undefined
          ? Images.fromSet(Images.make({ height: options.size, width: options.size, channels: options.channels ?? 3 }, new Uint8Array(0), new Int32Array(0)))
          : (yield* ImageFolder.open({ ...options, root: options.test, classes: train.classNames })).source
        return Dataset.of({ name: `images:${options.root}`, classes: train.classNames.length, train: train.source, test })
      })
    )
  }

  /**
   * The first `train` and `test` images of the provided dataset (all of a
   * split when it has fewer), named `<name>[:train/:test]` so that stage
   * configs, which name their dataset, tell the subset from the whole.
   */
  static firstImages(counts: { readonly train: number; readonly test: number }): Layer.Layer<Dataset, never, Dataset> {
    return Layer.effect(
      Dataset,
      Effect.gen(function*() {
        const data = yield* Dataset
        return Dataset.of({
          name: `${data.name}[:${counts.train}/:${counts.test}]`,
          classes: data.classes,
          train: Images.first(data.train, counts.train),
          test: Images.first(data.test, counts.test)
        })
      })
    )
  }

  /** Small generated images with learnable class structure, for tests. */
  static synthetic(options: Synthetic.Options): Layer.Layer<Dataset> {
    return Layer.succeed(Dataset, Dataset.of({
      name: "synthetic",
      classes: options.classes,
      train: Images.fromSet(Synthetic.images({ ...options, count: options.train }, "train")),
      test: Images.fromSet(Synthetic.images({ ...options, count: options.test }, "test"))
    }))
  }
}

const loadFashionMnist = Effect.fn("Dataset.fashionMnist")(function*(dir: string, size: number) {
  const fail = (file: string, reason: string) =>
    new DatasetError({ dataset: "Fashion-MNIST", path: path.join(dir, file), reason, hint: fashionHint })
  const read = (file: string) =>
    Effect.tryPromise({
      try: () => fs.readFile(path.join(dir, file)),
      catch: (e) => fail(file, (e as NodeJS.ErrnoException).code === "ENOENT" ? "file not found" : (e as Error).message)
    }).pipe(
      Effect.flatMap((bytes) => Idx.decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), file)),
      Effect.mapError((e) => (e._tag === "IdxError" ? fail(file, e.reason) : e))
    )
  const split = Effect.fnUntraced(function*(imagesFile: string, labelsFile: string) {
    const images = yield* read(imagesFile)
    const labels = yield* read(labelsFile)
    if (images.dims.length !== 3 || images.dims[1] !== 28 || images.dims[2] !== 28) {
      return yield* fail(imagesFile, `images have dimensions [${images.dims.join(", ")}], expected [N, 28, 28]`)
    }
    if (labels.dims.length !== 1 || labels.dims[0] !== images.dims[0]) {
      return yield* fail(labelsFile, `labels have dimensions [${labels.dims.join(", ")}], expected [${images.dims[0]}] to match the images`)
    }
    const bad = labels.data.findIndex((l) => l > 9)
    if (bad >= 0) return yield* fail(labelsFile, `label ${labels.data[bad]} at index ${bad} is not a class 0..9`)
    const set = Images.make({ height: 28, width: 28, channels: 1 }, images.data, Int32Array.from(labels.data))
    return Images.fromSet(size === 28 ? set : Images.pad(set, size))
  })
  const train = yield* split(fashionMnistFiles.trainImages, fashionMnistFiles.trainLabels)
  const test = yield* split(fashionMnistFiles.testImages, fashionMnistFiles.testLabels)
  return Dataset.of({ name: "fashion-mnist", classes: 10, train, test })
})
