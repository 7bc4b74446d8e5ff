// Inbound OpenPGP folders: uploads must already be OpenPGP messages. The check runs as the data streams through to
// the container; a non-conforming upload fails (on the write that shows it, or at close) and its partial is
// discarded, so nothing is stored. The result of every check goes to the audit as `pgp.verify`.
import type { AuditEvent, AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { FileStat, WriteHandle } from "../vfs/types.ts";
import { StreamFeed } from "./feed.ts";
import type { PgpKeyStore } from "./keystore.ts";
import { openpgpLib } from "./lib.ts";
import { EncryptedMessageCheck, TAG } from "./packets.ts";
import type { PgpFolderOptions } from "./types.ts";

export interface InboundContext {
  keys: PgpKeyStore;
  audit: AuditSink;
  /** The upload's audit fields (user, path, session …). */
  event: Omit<AuditEvent, "action" | "outcome">;
}

interface Check {
  push(data: Buffer): Promise<void>;
  /** Resolves with the audit detail on success (`target` = signer fingerprint when known). */
  end(): Promise<{ detail: string; target?: string }>;
  cancel(err: unknown): void;
}

function encryptedCheck(): Check {
  const check = new EncryptedMessageCheck();
  return {
    async push(data) {
      check.push(data);
    },
    async end() {
      const info = check.end();
      const to = info.recipientKeyIds.length ? `recipients ${info.recipientKeyIds.join(",")}` : "";
      const pw = info.passwords ? `${info.passwords} password(s)` : "";
      return { detail: `encrypted${info.armored ? " (armored)" : ""}: ${[to, pw].filter(Boolean).join(", ")}` };
    },
    cancel() {},
  };
}

function refuseSigned(why: string): AtrestError {
  return new AtrestError("REFUSED", `not an OpenPGP message signed by a known key: ${why}`);
}

/**
 * A signed (not encrypted) message whose signature verifies with a stored public key. The signature covers the whole
 * literal data, so the verdict comes at the end; openpgp verifies as the data streams (one-pass signatures, also
 * inside compressed packets as gpg --sign writes them).
 */
async function signedCheck(keys: PgpKeyStore): Promise<Check> {
  const feed = new StreamFeed();
  const rows = await keys.list();
  const verificationKeys = await Promise.all(rows.map((r) => keys.parsed(r)));
  let armored: boolean | undefined;
  let sniff = Buffer.alloc(0);
  let result: Promise<{ detail: string; target?: string }> | undefined;

  const start = (isArmored: boolean) => {
    armored = isArmored;
    result = (async () => {
      const message = isArmored
        ? await (await openpgpLib()).readMessage({
            armoredMessage: feed.stream.pipeThrough(
              new TextDecoderStream("latin1") as unknown as TransformStream<Uint8Array, string>,
            ),
          })
        : await (await openpgpLib()).readMessage({ binaryMessage: feed.stream });
      const tags = [...message.packets].map((p) => (p.constructor as unknown as { tag: number }).tag);
      if (tags.includes(TAG.PKESK) || tags.includes(TAG.SKESK)) {
        throw refuseSigned("it is encrypted (the server cannot see a signature inside the encryption)");
      }
      const verified = await (await openpgpLib()).verify({ message, verificationKeys, format: "binary" });
      // Drain the literal data: the signature is checked once all of it went through the hash.
      for await (const _ of verified.data as ReadableStream<Uint8Array>) {
        // discard
      }
      if (verified.signatures.length === 0) throw refuseSigned("no signature");
      const failures: string[] = [];
      for (const sig of verified.signatures) {
        try {
          await sig.verified;
          const at = verificationKeys.findIndex((k) => k.getKeyIDs().some((id) => id.equals(sig.keyID)));
          const row = at >= 0 ? rows[at] : undefined;
          const owner = row ? ` (${row.ownerKind === "group" ? "@" : ""}${row.ownerName})` : "";
          return { detail: `signed by ${row?.fingerprint ?? sig.keyID.toHex()}${owner}`, target: row?.fingerprint };
        } catch (err) {
          failures.push(`${sig.keyID.toHex()}: ${(err as Error).message}`);
        }
      }
      throw refuseSigned(failures.join("; "));
    })();
    // Avoid an unhandled rejection before end() awaits it; the failure also fails the feed so writes stop early.
    result.catch((err) => feed.fail(err));
  };

  return {
    async push(data) {
      if (armored === undefined) {
        sniff = Buffer.concat([sniff, data]);
        if (sniff.length < 64) return;
        start(sniff.toString("latin1").trimStart().startsWith("-----BEGIN PGP"));
        data = sniff;
      }
      await feed.push(data);
    },
    async end() {
      if (armored === undefined) {
        if (sniff.length === 0) throw refuseSigned("empty file");
        start(sniff.toString("latin1").trimStart().startsWith("-----BEGIN PGP"));
        await feed.push(sniff).catch(() => {});
      }
      feed.close();
      try {
        return await (result as Promise<{ detail: string; target?: string }>);
      } catch (err) {
        if (err instanceof AtrestError) throw err;
        throw refuseSigned((err as Error).message);
      }
    },
    cancel(err) {
      feed.fail(err);
    },
  };
}

/** Wraps `inner` so that only OpenPGP messages (per `mode`) are committed. Aborts always discard. */
export async function inboundWriteHandle(
  inner: WriteHandle,
  mode: NonNullable<PgpFolderOptions["inbound"]>,
  ctx: InboundContext,
): Promise<WriteHandle> {
  const check = mode === "encrypted" ? encryptedCheck() : await signedCheck(ctx.keys);
  let received = 0;
  let failed: unknown;
  const fail = async (err: unknown): Promise<never> => {
    if (!failed) {
      failed = err;
      check.cancel(err);
      await inner.abort(false).catch(() => {});
      const reason = err instanceof AtrestError ? err.message : "check failed";
      ctx.audit.record({ ...ctx.event, action: "pgp.verify", outcome: "failure", reason, detail: `inbound ${mode}` });
    }
    throw failed;
  };
  return {
    get size() {
      return received;
    },
    async write(offset, data) {
      if (failed) throw failed;
      try {
        await check.push(data);
        await inner.write(offset, data);
        received = offset + data.length;
      } catch (err) {
        await fail(err);
      }
    },
    async close(): Promise<FileStat> {
      if (failed) throw failed;
      let verdict: { detail: string; target?: string };
      try {
        verdict = await check.end();
      } catch (err) {
        return fail(err);
      }
      const stat = await inner.close();
      ctx.audit.record({ ...ctx.event, action: "pgp.verify", outcome: "success", ...verdict, size: stat.size });
      return stat;
    },
    async abort() {
      check.cancel(new AtrestError("UNSUPPORTED", "upload aborted"));
      await inner.abort(false);
    },
  };
}
