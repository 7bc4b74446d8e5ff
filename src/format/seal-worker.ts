// Seal worker (started by SealPool, see seal-pool.ts): seals batches of full, non-final segments exactly as
// ContainerKeys.seal does, each under a fresh random nonce, and sends them back as nonce ‖ ciphertext ‖ tag.
import { createCipheriv, type KeyObject, randomFillSync } from "node:crypto";
import { parentPort } from "node:worker_threads";
import { NONCE_LENGTH, SEAL_OVERHEAD, TAG_LENGTH } from "../crypto/aead.ts";
import { segmentAadTemplate, setSegmentAad } from "./container.ts";

export interface SealRequest {
  id: number;
  key: KeyObject;
  /** u16 len ‖ file id (ContainerKeys.sealWorkerParams). */
  fileIdField: Uint8Array;
  /** Index of the batch's first segment. */
  startIndex: number;
  /** A whole number of full segments; transferred here, and transferred back (for reuse) with the reply. */
  plaintext: ArrayBuffer;
  segmentSize: number;
}

export interface SealReply {
  id: number;
  /** The batch's segments, each segmentSize + 28 bytes, concatenated. Absent when `error` is set. */
  sealed?: ArrayBuffer;
  /** The request's plaintext buffer, handed back so the writer can refill it instead of allocating. */
  plaintext?: ArrayBuffer;
  error?: string;
}

function sealBatch(request: SealRequest): ArrayBuffer {
  const { key, fileIdField, startIndex, plaintext, segmentSize } = request;
  const count = plaintext.byteLength / segmentSize;
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(startIndex) || startIndex < 0) {
    throw new RangeError("seal request must hold a whole number of segments at a valid index");
  }
  const input = Buffer.from(plaintext);
  const sealedSize = segmentSize + SEAL_OVERHEAD;
  const out = Buffer.allocUnsafeSlow(count * sealedSize);
  // One CSPRNG call per batch; every segment gets its own 12 fresh bytes.
  const nonces = randomFillSync(Buffer.allocUnsafe(count * NONCE_LENGTH));
  const aad = segmentAadTemplate(fileIdField);
  for (let i = 0; i < count; i++) {
    const at = i * sealedSize;
    const nonce = nonces.subarray(i * NONCE_LENGTH, (i + 1) * NONCE_LENGTH);
    nonce.copy(out, at);
    const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_LENGTH });
    cipher.setAAD(setSegmentAad(aad, startIndex + i, false));
    // Node cannot encrypt into a given buffer: the one copy per segment.
    cipher.update(input.subarray(i * segmentSize, (i + 1) * segmentSize)).copy(out, at + NONCE_LENGTH);
    cipher.final(); // GCM: no further output
    cipher.getAuthTag().copy(out, at + NONCE_LENGTH + segmentSize);
  }
  // allocUnsafeSlow never pools: the ArrayBuffer is exactly this batch, so it can be transferred.
  return out.buffer;
}

const port = parentPort;
if (port === null) throw new Error("seal-worker.ts runs only as a worker thread (SealPool)");
port.on("message", (request: SealRequest) => {
  let reply: SealReply;
  try {
    const sealed = sealBatch(request);
    reply = { id: request.id, sealed, plaintext: request.plaintext };
    port.postMessage(reply, [sealed, request.plaintext]);
  } catch (err) {
    reply = { id: request.id, error: err instanceof Error ? err.message : String(err) };
    port.postMessage(reply);
  }
});
