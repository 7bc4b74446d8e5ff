import type { Command } from "commander";
import { AUDIT_CONTEXT, AUDIT_KEY_SETTING, dataPaths } from "../app.ts";
import { type ChainBreak, ed25519PublicKey, keyFingerprint, verifyChain } from "../audit/chain.ts";
import { checkpointPublicKeys } from "../audit/checkpoint-key.ts";
import { openRecord, readAuditLog } from "../audit/log.ts";
import { aeadKey } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { serviceKey } from "../store/service-keys.ts";
import { SqliteStore } from "../store/sqlite.ts";
import { dataOption, say, withApp } from "./common.ts";

/** Exit codes of `audit verify`: 0 intact and fully signed, 1 broken, 3 intact but with an unsigned tail. */
export const VERIFY_BROKEN = 1;
export const VERIFY_UNSIGNED_TAIL = 3;

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("audit trail");
  audit
    .command("tail")
    .description("print the last audit records (decrypted), one JSON object per line")
    .addOption(dataOption())
    .option("-n, --lines <n>", "how many records", "20")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const key = await serviceKey(app.store, app.keys, AUDIT_KEY_SETTING, "default", AUDIT_CONTEXT);
        try {
          const records = await readAuditLog(dataPaths(opts.data).audit, key);
          for (const r of records.slice(-Number(opts.lines))) process.stdout.write(`${JSON.stringify(r)}\n`);
        } finally {
          zero(key);
        }
      });
    });
  audit
    .command("verify")
    .description(
      "check the audit log's hash chain and signed checkpoints; report the first broken entry " +
        "(exit 0 intact, 1 broken, 3 intact but records after the last checkpoint are unsigned)",
    )
    .addOption(dataOption())
    .option("--file <file>", "audit log to check (default: the data directory's)")
    .option("--public-key <base64>", "trust this checkpoint key (raw or SPKI, base64) instead of the data directory's")
    .option("--anchor <seq:hash>", "an earlier head (from a previous verify) that must still be in the file")
    .option("--decrypt", "also decrypt every record with the audit key (needs the key manager)")
    .action(async (opts) => {
      const file: string = opts.file ?? dataPaths(opts.data).audit;
      let publicKeys: Map<string, ReturnType<typeof ed25519PublicKey>>;
      if (opts.publicKey) {
        const key = ed25519PublicKey(opts.publicKey);
        publicKeys = new Map([[keyFingerprint(key), key]]);
      } else {
        const store = new SqliteStore(dataPaths(opts.data).meta);
        try {
          publicKeys = await checkpointPublicKeys(store);
        } finally {
          await store.close();
        }
      }
      let anchor: { seq: number; hash: string } | undefined;
      if (opts.anchor) {
        const m = /^(\d+):([0-9a-f]{64})$/.exec(opts.anchor);
        if (!m) throw new Error("--anchor must be <seq>:<64 hex digits>");
        anchor = { seq: Number(m[1]), hash: m[2] as string };
      }
      const started = performance.now();
      const run = async (onRecord?: (seq: number, sealed: Buffer) => string | undefined) =>
        verifyChain(file, { publicKeys, anchor, ...(onRecord ? { onRecord } : {}) });
      const result = opts.decrypt
        ? await withApp(opts.data, async (app) => {
            const raw = await serviceKey(app.store, app.keys, AUDIT_KEY_SETTING, "default", AUDIT_CONTEXT);
            const key = aeadKey(raw);
            zero(raw);
            return run((seq, sealed) => {
              try {
                openRecord(key, seq, sealed);
                return undefined;
              } catch {
                return `entry ${seq} does not decrypt under the audit key`;
              }
            });
          })
        : await run();
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      if (publicKeys.size === 0 && result.checkpoints > 0 && !result.error) {
        process.exitCode = VERIFY_BROKEN;
        say(`${file}: no trusted checkpoint key (data directory without one, and no --public-key)`);
        return;
      }
      if (result.error) {
        process.exitCode = VERIFY_BROKEN;
        say(`${file}: BROKEN at ${describe(result.error)}`);
        say(`verified ${result.lines - 1} line(s) before it`);
        return;
      }
      const cp = result.lastCheckpoint;
      say(
        `${file}: ${result.records} record(s), ${result.checkpoints} checkpoint(s)` +
          (result.legacy ? `, ${result.legacy} legacy v1 record(s) covered by the chain` : "") +
          ` verified in ${seconds} s`,
      );
      if (cp) say(`last checkpoint: line ${cp.line}, anchor ${cp.seq}:${cp.hash}`);
      if (result.unsigned > 0) {
        process.exitCode = VERIFY_UNSIGNED_TAIL;
        say(
          `WARNING: ${result.unsigned} record(s) after ${cp ? `the last checkpoint (line ${cp.line})` : "the start"} ` +
            "are not signed: the writer is still running or crashed, or the file was truncated",
        );
        return;
      }
      say("OK");
    });
}

function describe(e: ChainBreak): string {
  return `line ${e.line}${e.seq !== undefined ? ` (entry ${e.seq})` : ""}: ${e.kind}: ${e.message}`;
}
