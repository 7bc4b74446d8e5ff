// A WriteHandle that OpenPGP-encrypts what a client writes before it reaches the encrypted container: the stored
// content of a file in a PGP folder is the OpenPGP message, encrypted as it streams in.
import type * as openpgp from "openpgp";
import { AtrestError, HandleClosedError } from "../errors.ts";
import type { FileStat, SetAttrs, WriteHandle } from "../vfs/types.ts";
import { encryptStream } from "./encrypt.ts";
import { StreamFeed } from "./feed.ts";
import { SeipdV1Encryptor, seipdV1Applies } from "./seipd.ts";

export interface PgpWritePlan {
  recipients: openpgp.PublicKey[];
  signingKey?: openpgp.PrivateKey;
  /** Name recorded in the literal data packet (the client's file name). */
  filename: string;
}

/**
 * Wraps `inner` (a fresh, truncated container write). `size` counts plaintext bytes received (what the client's
 * offsets refer to); the committed file's size is the message's. A failure of the encryption or of the inner write
 * surfaces on the next write or on close. Aborting always discards: a partial OpenPGP message cannot be resumed.
 */
export async function encryptingWriteHandle(inner: WriteHandle, plan: PgpWritePlan): Promise<WriteHandle> {
  if (!plan.signingKey && (await seipdV1Applies(plan.recipients))) return directHandle(inner, plan);
  const feed = new StreamFeed();
  const message = await encryptStream(feed.stream, plan.recipients, {
    signingKey: plan.signingKey,
    filename: plan.filename,
  });
  let received = 0;
  let stored = 0;
  let finished = false;
  const reader = message.getReader();
  // Moves the message into the container as openpgp produces it; the container write's own backpressure (seal
  // worker, disk) slows this loop, which slows openpgp's reads from the feed, which slows the client.
  const pump = (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        await inner.write(stored, Buffer.from(value.buffer, value.byteOffset, value.byteLength));
        stored += value.byteLength;
      }
    } catch (err) {
      feed.fail(err);
      await reader.cancel(err).catch(() => {});
    }
  })();

  return {
    get size() {
      return received;
    },
    async write(offset, data) {
      if (offset !== received) {
        throw new AtrestError(
          "UNSUPPORTED",
          "non-sequential write into an OpenPGP folder (files are encrypted as they stream)",
        );
      }
      received += data.length;
      await feed.push(data);
    },
    async close(attrs?: SetAttrs): Promise<FileStat> {
      if (finished) throw new HandleClosedError("handle closed");
      finished = true;
      feed.close();
      await pump;
      if (feed.failure) {
        await inner.abort(false).catch(() => {});
        throw feed.failure;
      }
      return inner.close(attrs);
    },
    async abort() {
      finished = true;
      feed.fail(new AtrestError("UNSUPPORTED", "upload aborted"));
      await pump;
      await inner.abort(false);
    },
  };
}

function nonSequential(): AtrestError {
  return new AtrestError(
    "UNSUPPORTED",
    "non-sequential write into an OpenPGP folder (files are encrypted as they stream)",
  );
}

/**
 * The common case without streams: each client write is encrypted synchronously (SEIPD v1 writer) and its message
 * bytes written straight to the container, so the client's write waits for exactly one container write, like an
 * upload anywhere else. No queue between the stages, nothing to hand off.
 */
async function directHandle(inner: WriteHandle, plan: PgpWritePlan): Promise<WriteHandle> {
  const enc = await SeipdV1Encryptor.create(plan.recipients, { filename: plan.filename });
  let received = 0;
  let stored = 0;
  let failure: unknown;
  let finished = false;
  const emit = async (bytes: Buffer) => {
    if (bytes.length === 0) return;
    await inner.write(stored, bytes);
    stored += bytes.length;
  };
  return {
    get size() {
      return received;
    },
    async write(offset, data) {
      if (failure) throw failure;
      if (finished) throw new HandleClosedError("handle closed");
      if (offset !== received) throw nonSequential();
      received += data.length;
      try {
        await emit(enc.push(data));
      } catch (err) {
        failure = err;
        throw err;
      }
    },
    async close(attrs?: SetAttrs): Promise<FileStat> {
      if (finished) throw new HandleClosedError("handle closed");
      finished = true;
      try {
        if (failure) throw failure;
        await emit(enc.end());
      } catch (err) {
        await inner.abort(false).catch(() => {});
        throw err;
      }
      return inner.close(attrs);
    },
    async abort() {
      finished = true;
      await inner.abort(false);
    },
  };
}
