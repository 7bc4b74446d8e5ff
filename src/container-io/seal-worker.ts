// Seal worker (started by SealPool, see seal-pool.ts). Keys are registered once per container ("keys" message) and
// referenced by id afterwards; jobs then carry only buffers. "seal" seals batches of full, non-final segments exactly
// as ContainerKeys.seal does, each under a fresh random nonce (nonce ‖ ciphertext ‖ tag); "open" authenticates and
// decrypts consecutive segments exactly as ContainerKeys.open does (the final one's padding checked and stripped).
// Buffers travel by transfer in both directions so the main thread can reuse them.
import { type KeyObject, randomFillSync } from "node:crypto";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { parentPort } from "node:worker_threads";
import { NONCE_LENGTH } from "../crypto/aead.ts";
import { IntegrityError } from "../errors.ts";
import { openSegmentsInto, sealSegmentsInto, segmentAadTemplate } from "../format/container.ts";
import type { Layout } from "../format/layout.ts";
import type { ErrorReply, OpenReply, OpenRequest, SealReply, SealRequest, WorkerRequest } from "./seal-messages.ts";

interface Keys {
  key: KeyObject;
  /** Segment AAD template; rewritten per segment (one job at a time per worker). */
  aad: Buffer;
  layout: Layout;
}

const registered = new Map<number, Keys>();
let nonceScratch = Buffer.alloc(0);

function keysOf(id: number): Keys {
  const keys = registered.get(id);
  if (keys === undefined) throw new RangeError(`no keys registered under ${id}`);
  return keys;
}

/** An ArrayBuffer of at least `bytes`: the offered one when large enough (never pooled memory: it is transferred). */
function outputBuffer(offered: ArrayBuffer | undefined, bytes: number): ArrayBuffer {
  if (offered !== undefined && offered.byteLength >= bytes) return offered;
  return Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer;
}

function sealBatch(request: SealRequest): SealReply {
  const { key, aad, layout } = keysOf(request.keys);
  const { startIndex, plaintext } = request;
  const segmentSize = layout.segmentSize;
  const count = plaintext.byteLength / segmentSize;
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(startIndex) || startIndex < 0) {
    throw new RangeError("seal request must hold a whole number of segments at a valid index");
  }
  const input = Buffer.from(plaintext);
  const sealedSize = layout.sealedSegmentSize;
  const length = count * sealedSize;
  const sealed = outputBuffer(request.output, length);
  const out = Buffer.from(sealed, 0, length);
  // One CSPRNG call per batch; every segment gets its own 12 fresh bytes.
  if (nonceScratch.length < count * NONCE_LENGTH) nonceScratch = Buffer.allocUnsafeSlow(count * NONCE_LENGTH);
  const nonces = randomFillSync(nonceScratch, 0, count * NONCE_LENGTH);
  sealSegmentsInto(key, aad, layout, startIndex, input, out, nonces);
  return { type: "seal", id: request.id, sealed, length, plaintext };
}

function openRange(request: OpenRequest): OpenReply {
  const { key, aad, layout } = keysOf(request.keys);
  const { startIndex, sealedLength, last } = request;
  const full = layout.sealedSegmentSize;
  if (
    !Number.isSafeInteger(startIndex) ||
    startIndex < 0 ||
    !Number.isSafeInteger(sealedLength) ||
    sealedLength < 1 ||
    sealedLength > request.sealed.byteLength
  ) {
    throw new RangeError("open request has a bad index or length");
  }
  const count = Math.ceil(sealedLength / full);
  const input = Buffer.from(request.sealed, 0, sealedLength);
  const plaintext = outputBuffer(request.output, count * layout.segmentSize);
  const out = Buffer.from(plaintext, 0, count * layout.segmentSize);
  const length = openSegmentsInto(key, aad, layout, startIndex, input, last, out);
  return { type: "open", id: request.id, plaintext, length, sealed: request.sealed };
}

// Without atrest's GCM binding (node:crypto fallback, gcm-native.ts) every segment costs fresh cipher/decipher output
// buffers (node:crypto cannot encrypt into a given buffer); with it nothing per segment is allocated. V8 collects
// that garbage only once ~64 MiB of it piled up, which showed as ~60 MB of server RSS during transfers; a scavenge
// every few jobs (young generation only: well under a millisecond here) keeps it to a few MiB. `gc` is exposed to
// this one context only: the flag is switched off again right away (V8 flags are process-wide).
// Workers starting together can race on the shared flag; the scavenge is an optimisation, so without `gc` we skip it.
type Collect = (options: { type: "minor"; execution: "sync" }) => void;
function exposeGc(): Collect | undefined {
  try {
    setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as Collect;
  } catch {
    return undefined;
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
}
const collect = exposeGc();
const JOBS_PER_SCAVENGE = 8;
let sinceGc = 0;
const port = parentPort;
if (port === null) throw new Error("seal-worker.ts runs only as a worker thread (SealPool)");
port.on("message", (message: WorkerRequest) => {
  switch (message.type) {
    case "keys":
      registered.set(message.keys, {
        key: message.key,
        aad: segmentAadTemplate(message.fileIdField),
        layout: message.layout,
      });
      return;
    case "release":
      registered.delete(message.keys);
      return;
  }
  if (++sinceGc >= JOBS_PER_SCAVENGE) {
    sinceGc = 0;
    collect?.({ type: "minor", execution: "sync" });
  }
  try {
    if (message.type === "seal") {
      const reply = sealBatch(message);
      port.postMessage(reply, [reply.sealed, reply.plaintext]);
    } else {
      const reply = openRange(message);
      port.postMessage(reply, [reply.plaintext, reply.sealed]);
    }
  } catch (err) {
    const reply: ErrorReply = {
      type: "error",
      id: message.id,
      error: err instanceof Error ? err.message : String(err),
      integrity: err instanceof IntegrityError,
    };
    port.postMessage(reply);
  }
});
