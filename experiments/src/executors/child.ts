/**
 * A compute process (see Local.ts): `node child.ts STORE BACKEND LOG-FORMAT NAME`,
 * forked with an IPC channel. It runs the jobs its parent sends, one at a
 * time, on the store and Compute backend of its arguments, sends the
 * job's progress figures (which its parent shows in one view with the
 * other workers'), and answers each job with Done or Failed. It exits when its parent goes (the channel
 * closes): a job nobody waits for is not worth a core, and its lock goes
 * with the process.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Layer, Logger, Option, Queue, Schema } from "effect"
import { ArtifactStore, Progress } from "@tinyfusion/core"
import { type BackendName, Compute } from "@tinyfusion/tensor"
import * as Methods from "../methods.ts"
import { datasets, perform } from "./Job.ts"
import { type ChildMessage, ParentMessage } from "./Local.ts"

const [store, backend, logFormat, name] = process.argv.slice(2)
if (store === undefined || backend === undefined || logFormat === undefined || name === undefined || process.send === undefined) {
  process.stderr.write("child.ts is forked by the local executor (Local.ts): node child.ts STORE BACKEND LOG-FORMAT NAME, with an IPC channel\n")
  process.exit(2)
}
process.on("disconnect", () => process.exit(1))

const say = (message: ChildMessage) => Effect.sync(() => void process.send!(message))
const decode = Schema.decodeUnknownSync(ParentMessage)

const serve = Effect.gen(function*() {
  const inbox = yield* Queue.unbounded<ParentMessage>()
  process.on("message", (raw) => Queue.offerUnsafe(inbox, decode(raw)))
  const data = yield* datasets
  yield* say({ _tag: "Ready" })
  while (true) {
    const { job } = yield* Queue.take(inbox)
    const progress = (figures: Progress.Figures) => say({ _tag: "Progress", key: job.key, figures })
    const result = yield* Effect.result(perform(job, data).pipe(Effect.provideService(Progress.Sink, Option.some(progress))))
    yield* say(result._tag === "Success" ? { _tag: "Done", key: job.key } : { _tag: "Failed", key: result.failure.key, stage: result.failure.stage, reason: result.failure.reason })
  }
})

serve.pipe(
  Effect.scoped,
  Effect.annotateLogs({ worker: name }),
  Effect.provide(Layer.mergeAll(
    ArtifactStore.layer(store),
    Compute.layer(backend as BackendName | "auto"),
    Methods.layer,
    // The parent shows the progress (sent through Progress.Sink).
    Layer.succeed(Progress.Display, "none"),
    // As the CLI's --log-format: JSON lines go to stderr too.
    Logger.layer([logFormat === "json" ? Logger.withConsoleError(Logger.formatJson) : Logger.consolePretty()]),
    Layer.succeed(Logger.LogToStderr, true)
  )),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain({ disableErrorReporting: false })
)
