import type { KeyObject } from "node:crypto";
import { hostname } from "node:os";
import { resolve } from "node:path";
import type { Command } from "commander";
import { Option } from "commander";
import type { App } from "../app.ts";
import { AUDIT_CONTEXT, AUDIT_KEY_SETTING, dataPaths, openStore } from "../app.ts";
import { type ChainBreak, ed25519PublicKey, keyFingerprint, verifyChain } from "../audit/chain.ts";
import { checkpointPublicKeys } from "../audit/checkpoint-key.ts";
import { encodeCef } from "../audit/encoders/cef.ts";
import { safeJson } from "../audit/encoders/common.ts";
import { encodeEcsJson } from "../audit/encoders/ecs-json.ts";
import { encodeLeef } from "../audit/encoders/leef.ts";
import { encodeRfc5424 } from "../audit/encoders/rfc5424.ts";
import { type HighWater, markNames, readHighWater, resetHighWater } from "../audit/high-water.ts";
import { openRecord } from "../audit/log.ts";
import { fileHistory, loginHistory, type Match, parseSince, query } from "../audit/query.ts";
import { formatStats, readStats } from "../audit/stats.ts";
import { aeadKey } from "../crypto/aead.ts";
import { zero } from "../crypto/bytes.ts";
import { AtrestError } from "../errors.ts";
import { readRemoteKms } from "../keys/key-manager.ts";
import type { KeyManager } from "../keys/provider.ts";
import { serviceKey } from "../keys/service-keys.ts";
import { actorFields, cliActor } from "../service/actor.ts";
import { recordedNodeId } from "../wiring/meta-store.ts";
import { asOption } from "./as.ts";
import { dataOption, say, withApp, withKeyManager } from "./common.ts";

/**
 * Exit codes of `audit verify`: 0 intact and fully signed, 1 broken, 3 intact but with an unsigned tail, 4 intact but
 * the key manager's high-water mark could not be read (so a log cut back together with meta.db would go unnoticed).
 */
export const VERIFY_BROKEN = 1;
export const VERIFY_UNSIGNED_TAIL = 3;
export const VERIFY_UNANCHORED = 4;

interface Anchor {
  seq: number;
  hash: string;
  /** Where it came from, for the report. */
  from: string;
  at?: string;
}

/** The key manager's mark of the data directory's log (kms/audit-marks.ts), or why it could not be read. */
async function kmsMark(data: string): Promise<{ mark?: { seq: number; hash: string; at: string }; problem?: string }> {
  try {
    return await withKeyManager(data, async ({ keys }) => {
      if (!keys.auditMark) return { problem: "this key manager keeps no audit marks" };
      const mark = await keys.auditMark(markNames(recordedNodeId(data)).kmsLog);
      return mark ? { mark } : {};
    });
  } catch (err) {
    return { problem: (err as Error).message };
  }
}

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("audit trail");
  audit
    .command("tail")
    .description("print the last audit records (decrypted), oldest first")
    .addOption(dataOption())
    .option("-n, --lines <n>", "how many records", "20")
    .addOption(formatOption("json"))
    .option("--since <when>", "only records since an ISO date/time or a duration back (30m, 12h, 7d)")
    .action(async (opts) => {
      const limit = positive(opts.lines, "--lines");
      await withAuditKey(opts.data, async (key) => {
        const matches = query(dataPaths(opts.data).audit, key, () => true, { limit, since: sinceOf(opts.since) });
        printMatches(matches, opts.format);
      });
    });
  audit
    .command("logins <user>")
    .description("login history of a user: successes and failures with method, source IP and reason, and logouts")
    .addOption(dataOption())
    .addOption(formatOption("text"))
    .option("--since <when>", "only records since an ISO date/time or a duration back (30m, 12h, 7d)")
    .option("-n, --lines <n>", "at most the last n records")
    .action(async (user: string, opts) => {
      const limit = opts.lines === undefined ? undefined : positive(opts.lines, "--lines");
      await withAuditKey(opts.data, async (key) => {
        printMatches(
          loginHistory(dataPaths(opts.data).audit, key, user, { since: sinceOf(opts.since), limit }),
          opts.format,
        );
      });
    });
  audit
    .command("file <path>")
    .description("access history of a file (global path such as /alice/report.pdf, or the path as its user saw it)")
    .addOption(dataOption())
    .addOption(formatOption("text"))
    .option("--since <when>", "only records since an ISO date/time or a duration back (30m, 12h, 7d)")
    .option("-n, --lines <n>", "at most the last n records")
    .action(async (path: string, opts) => {
      const limit = opts.lines === undefined ? undefined : positive(opts.lines, "--lines");
      await withAuditKey(opts.data, async (key, app) => {
        const homes = new Map((await app.store.listUsers()).map((u) => [u.name, u.home]));
        printMatches(
          fileHistory(dataPaths(opts.data).audit, key, path, homes, { since: sinceOf(opts.since), limit }),
          opts.format,
        );
      });
    });
  audit
    .command("stats")
    .description(
      "SIEM delivery per destination: events/s, bytes/s, backlog, connected, last error " +
        "(live from the running server, else computed from the spool)",
    )
    .addOption(dataOption())
    .option("--json", "print the figures as JSON")
    .action((opts) => {
      const view = readStats(dataPaths(opts.data).audit);
      process.stdout.write(
        opts.json ? `${JSON.stringify({ live: view.live, ...view.snapshot }, null, 2)}\n` : formatStats(view),
      );
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
    .option(
      "--anchor <seq:hash>",
      "an earlier head (from a previous verify) that must still be in the file (default for the data directory's log: " +
        "its high-water mark)",
    )
    .option("--decrypt", "also decrypt every record with the audit key (needs the key manager)")
    .action(async (opts) => {
      const file: string = opts.file ?? dataPaths(opts.data).audit;
      // the high-water mark belongs to the data directory's own log, not to a copy checked with --file
      const ownLog = resolve(file) === resolve(dataPaths(opts.data).audit);
      let publicKeys: Map<string, ReturnType<typeof ed25519PublicKey>> | undefined;
      let highWater: HighWater | undefined;
      let atKms: Awaited<ReturnType<typeof kmsMark>> | undefined;
      if (opts.publicKey) {
        const key = ed25519PublicKey(opts.publicKey);
        publicKeys = new Map([[keyFingerprint(key), key]]);
      }
      if (ownLog) atKms = await kmsMark(opts.data);
      if (!opts.publicKey || ownLog) {
        const store = openStore(dataPaths(opts.data));
        try {
          publicKeys ??= await checkpointPublicKeys(store);
          if (ownLog) highWater = await readHighWater(store, recordedNodeId(opts.data));
        } finally {
          await store.close();
        }
      }
      const trusted = publicKeys ?? new Map();
      let anchor: { seq: number; hash: string } | undefined;
      if (opts.anchor) {
        const m = /^(\d+):([0-9a-f]{64})$/.exec(opts.anchor);
        if (!m) throw new Error("--anchor must be <seq>:<64 hex digits>");
        anchor = { seq: Number(m[1]), hash: m[2] as string };
      }
      const candidates: (Anchor | undefined)[] = [
        anchor && { ...anchor, from: "--anchor" },
        highWater && { ...highWater, from: "the metadata store's high-water mark" },
        atKms?.mark && { ...atKms.mark, from: "the key manager's high-water mark" },
      ];
      // highest first; the same checkpoint from two places is checked once
      const anchors = candidates
        .filter((a): a is Anchor => a !== undefined)
        .sort((a, b) => b.seq - a.seq)
        .filter((a, i, all) => all.findIndex((b) => b.seq === a.seq && b.hash === a.hash) === i);
      let failedAnchor: Anchor | undefined;
      const started = performance.now();
      const run = async (onRecord?: (seq: number, sealed: Buffer) => string | undefined) => {
        // one pass per distinct anchor beyond the first is rare (an explicit --anchor, an older mark) and cheap enough
        let r = verifyChain(file, { publicKeys: trusted, anchor: anchors[0], ...(onRecord ? { onRecord } : {}) });
        failedAnchor = anchors[0];
        for (const a of anchors.slice(1)) {
          if (r.error) break;
          r = verifyChain(file, { publicKeys: trusted, anchor: a });
          failedAnchor = a;
        }
        return r;
      };
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
      if (trusted.size === 0 && result.checkpoints > 0 && !result.error) {
        process.exitCode = VERIFY_BROKEN;
        say(`${file}: no trusted checkpoint key (data directory without one, and no --public-key)`);
        return;
      }
      if (result.error) {
        process.exitCode = VERIFY_BROKEN;
        say(`${file}: BROKEN at ${describe(result.error)}`);
        if (failedAnchor && failedAnchor.from !== "--anchor" && /anchor/.test(result.error.message)) {
          say(
            `${failedAnchor.from} says entry ${failedAnchor.seq} (a checkpoint signed ${failedAnchor.at}) ` +
              `was in this log with hash ${failedAnchor.hash}: the log was cut back, emptied or replaced ` +
              "(moved a damaged log aside on purpose? atrest audit highwater reset)",
          );
        }
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
      if (highWater) say(`high-water mark ${highWater.seq} (metadata store): present`);
      else if (ownLog) say("no high-water mark in the metadata store yet (none recorded: no checkpoint since)");
      if (atKms?.mark) say(`high-water mark ${atKms.mark.seq} (key manager): present`);
      else if (ownLog && !atKms?.problem) say("no high-water mark at the key manager yet (no checkpoint since)");
      if (atKms?.problem) {
        process.exitCode = VERIFY_UNANCHORED;
        say(
          `WARNING: the key manager's high-water mark could not be read (${atKms.problem}): a log cut back together ` +
            "with the metadata store would not be noticed",
        );
        return;
      }
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
  audit
    .command("highwater")
    .description(
      "the log's high-water marks in the metadata store and at the key manager (the newest checkpoint verify must " +
        "find); reset needs a custodian of the key manager",
    )
    .argument("[action]", "show (default) or reset (after moving a damaged log aside: a new chain starts)", "show")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--reason <text>", "reset: why (recorded in both audit logs)")
    .option(
      "--custodian-cert <dir>",
      "reset with a remote key manager: a custodian's client certificate directory (atrest kms client issue " +
        "--role custodian); the embedded one acts as the local custodian",
    )
    .action(async (action: string, opts) => {
      if (action !== "show" && action !== "reset") {
        throw new AtrestError("INVALID_INPUT", "atrest audit highwater [show|reset]");
      }
      await withApp(opts.data, async (app) => {
        const node = recordedNodeId(opts.data);
        const { kmsLog } = markNames(node);
        const atKms = app.keys.auditMark ? await app.keys.auditMark(kmsLog) : undefined;
        if (action === "show") {
          const hw = await readHighWater(app.store, node);
          say(hw ? `high-water mark: entry ${hw.seq} hash ${hw.hash} (recorded ${hw.at})` : "no high-water mark");
          say(
            atKms
              ? `key manager's mark (client ${atKms.client}): entry ${atKms.seq} hash ${atKms.hash} (recorded ${atKms.at})`
              : "no high-water mark at the key manager",
          );
          return;
        }
        const reason: string | undefined = opts.reason;
        if (!reason?.trim()) throw new AtrestError("INVALID_INPUT", "audit highwater reset needs --reason TEXT");
        // the key manager's mark first: it is the one a custodian must agree to drop
        let kmsWas: number | undefined;
        if (atKms) {
          const custodian = await custodianKeys(app, opts.custodianCert);
          try {
            kmsWas = (await custodian.resetAuditMark(atKms.client, kmsLog, reason))?.seq;
          } finally {
            if (custodian !== app.keys) await custodian.close();
          }
        }
        const was = await resetHighWater(app.store, node);
        const what =
          `audit high-water mark reset${was ? ` (was entry ${was.seq})` : ""}` +
          (kmsWas !== undefined ? `, key manager's mark reset (was entry ${kmsWas})` : "");
        app.audit.record({
          action: "audit.config.change",
          outcome: "success",
          ...actorFields(cliActor(opts.as)),
          detail: `${what}: ${reason}`,
        });
        say(`${what}; the next checkpoint sets them again`);
      });
    });
}

/** Who may reset the key manager's mark: the embedded key manager's local custodian, or a remote custodian's cert. */
async function custodianKeys(
  app: App,
  certDir: string | undefined,
): Promise<Required<Pick<KeyManager, "resetAuditMark">> & { close(): Promise<void> }> {
  if (app.embedded) return app.embedded;
  const bound = await readRemoteKms(app.paths.root);
  if (!bound || !certDir) {
    throw new AtrestError(
      "PERMISSION_DENIED",
      `the key manager ${app.keyManagerLocation} keeps this log's high-water mark: only one of its custodians may ` +
        "reset it (--custodian-cert DIR with a custodian's client certificate)",
    );
  }
  const { RemoteKms } = await import("../kms/api/client.ts");
  return RemoteKms.connect({ url: bound.url, certDir });
}

function describe(e: ChainBreak): string {
  return `line ${e.line}${e.seq !== undefined ? ` (entry ${e.seq})` : ""}: ${e.kind}: ${e.message}`;
}

const OUTPUT_FORMATS = ["text", "json", "cef", "leef", "rfc5424", "ecs"] as const;

function formatOption(def: string): Option {
  return new Option("--format <format>", "output format").choices(OUTPUT_FORMATS).default(def);
}

function positive(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new AtrestError("INVALID_INPUT", `${flag} must be a positive integer`);
  return n;
}

function sinceOf(value: string | undefined): Date | undefined {
  if (value === undefined) return undefined;
  try {
    return parseSince(value);
  } catch (err) {
    throw new AtrestError("INVALID_INPUT", (err as Error).message);
  }
}

async function withAuditKey(data: string, fn: (key: KeyObject, app: App) => Promise<void>): Promise<void> {
  await withApp(data, async (app) => {
    const raw = await serviceKey(app.store, app.keys, AUDIT_KEY_SETTING, "default", AUDIT_CONTEXT);
    const key = aeadKey(raw);
    zero(raw);
    await fn(key, app);
  });
}

/** One line per record: text columns, the stored JSON (with seq), or a SIEM format. */
export function renderMatch(m: Match, format: string): string {
  const r = m.record;
  switch (format) {
    case "json":
      return safeJson({ seq: m.seq, ...r });
    case "cef":
      return encodeCef(r, {}, { seq: m.seq });
    case "leef":
      return encodeLeef(r, {}, { seq: m.seq });
    case "rfc5424":
      return encodeRfc5424(r, { hostname: hostname() }, { seq: m.seq });
    case "ecs":
      return encodeEcsJson(r, { seq: m.seq });
  }
  const t = textField;
  const who = r.effectiveUser && r.effectiveUser !== r.user ? `${t(r.user)} as ${t(r.effectiveUser)}` : t(r.user);
  const cols = [t(r.time), t(r.action), t(r.outcome), who];
  if (r.method) cols.push(`method=${t(r.method)}`);
  if (r.sourceIp) cols.push(`from=${t(r.sourceIp)}`);
  if (r.protocol) cols.push(`via=${t(r.protocol)}`);
  if (r.path !== undefined) cols.push(r.targetPath !== undefined ? `${t(r.path)} -> ${t(r.targetPath)}` : t(r.path));
  if (r.size !== undefined) cols.push(`${Number(r.size)} B`);
  if (r.reason) cols.push(`reason=${safeJson(String(r.reason))}`);
  if (r.sessionId) cols.push(`session=${t(r.sessionId)}`);
  return cols.join("  ");
}

// A value a user chose (a file name, a user name) printed as text: as it is when it is plain, else as a JSON string
// (quoted, with every control character, quote and backslash escaped), so it can neither move the cursor, recolour or
// retitle the terminal (ESC and C1 sequences), nor start a new line, nor pass for another column ("  ", " -> ", " as ").
// biome-ignore lint/suspicious/noControlCharactersInRegex: the point is to find them
const NOT_PLAIN = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069"\\]|^ | $| {2}| -> | as |^$/;

export function textField(value: unknown): string {
  const s = String(value);
  return NOT_PLAIN.test(s) ? safeJson(s) : s;
}

function printMatches(matches: Match[], format: string): void {
  let out = "";
  for (const m of matches) out += `${renderMatch(m, format)}\n`;
  process.stdout.write(out);
}
