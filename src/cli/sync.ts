// `atrest sync …`: the end-to-end encrypted sync client (docs/sync-protocol.md). State in --state (default
// ~/.atrest-sync): the device's keys sealed under an argon2id key of the passphrase (ATREST_SYNC_PASSPHRASE, else a
// prompt). The server sees public keys, signed manifests and ciphertext only.
import { type FSWatcher, watch } from "node:fs";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { setFlagsFromString } from "node:v8";
import { Command, CommanderError, Option } from "commander";
import { AtrestError } from "../errors.ts";
import type { StepReport, Transfer } from "../sync/client/engine.ts";
import type { Session } from "../sync/client/session.ts";
import { unlockState } from "../sync/client/state.ts";
import { formatFingerprint, normalizeFingerprint } from "../sync/core/keys.ts";
import { startGcPacing } from "./gc-pacing.ts";
import { promptSecret, readSecretLines } from "./secret-input.ts";

const stateOption = () =>
  new Option("--state <dir>", "sync state directory (device keys, pins)")
    .env("ATREST_SYNC_STATE")
    .default(join(homedir(), ".atrest-sync"));

const SET_PASSPHRASE = "set ATREST_SYNC_PASSPHRASE, or run the command on a terminal to be asked";

async function passphrase(): Promise<string> {
  return (
    process.env.ATREST_SYNC_PASSPHRASE ??
    (await promptSecret("passphrase: ", "the passphrase of this device's keys", SET_PASSPHRASE))
  );
}

// The client, its HTTPS API and the engine load only after the argon2id unlock (64 MiB): loaded while it runs, their
// memory and the KDF's peak together (measured 198 MB at the unlock of a first sync, 146 MB one after the other).
/** GC pacing runs once per process (runCli may run several commands in one, as tests do). */
let pacing = false;
const engine = () => import("../sync/client/engine.ts");
const links = () => import("../sync/client/links.ts");
const session = () => import("../sync/client/session.ts");

async function withSession<T>(state: string, fn: (s: Session) => Promise<T>): Promise<T> {
  const unlocked = await unlockState(resolve(state), await passphrase());
  const { Session } = await session().catch(async (err) => {
    await unlocked.release();
    throw err;
  });
  const s = Session.fromUnlocked(unlocked);
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

const out = (line: string) => process.stdout.write(`${line}\n`);
const tty = () => process.stderr.isTTY === true;
/** Per-file lines when stderr is not a terminal; on a terminal the bar below stands for them. */
const progress = (line: string) => {
  if (!tty()) process.stderr.write(`atrest sync: ${line}\n`);
};
let lastBar = 0;
function bar(t: Transfer): void {
  if (!tty()) return;
  const now = Date.now();
  const done = t.files === t.filesTotal;
  if (!done && now - lastBar < 100) return;
  lastBar = now;
  const frac = t.bytesTotal > 0 ? t.bytes / t.bytesTotal : t.files / Math.max(1, t.filesTotal);
  const width = 30;
  const fill = Math.round(frac * width);
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  process.stderr.write(
    `\ratrest sync: ${t.direction === "up" ? "↑" : "↓"} [${"#".repeat(fill)}${"-".repeat(width - fill)}] ${Math.floor(frac * 100)}% ` +
      `${t.files}/${t.filesTotal} files ${mib(t.bytes)}/${mib(t.bytesTotal)} MiB${done ? "\n" : ""}`,
  );
}

/** How long a continuous run waits after the watcher saw a change before its step starts. */
const SETTLE_MS = 100;

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

const NETWORK_ERRORS = new Set([
  "ENOENT",
  "ENOTDIR",
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

/** Worth another step later: the server unreachable or failing, another device kept publishing first, or files kept vanishing under the step. */
/** A SyncApiError (api.ts is not loaded before a session is open, so no `instanceof` here). */
function isApiError(err: unknown): err is { status: number; problemCode: string } {
  return err instanceof AtrestError && "problemCode" in err && typeof err.problemCode === "string" && "status" in err;
}

function transient(err: unknown): boolean {
  if (isApiError(err)) return err.problemCode === "STALE_MANIFEST" || err.status >= 500;
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && NETWORK_ERRORS.has(code);
}

function summary(r: StepReport): string {
  const parts = [
    `version ${r.version}`,
    `up ${r.uploaded} (${r.bytesUp} B)`,
    `down ${r.downloaded} (${r.bytesDown} B)`,
  ];
  if (r.renamed) parts.push(`renamed ${r.renamed}`);
  if (r.deletedLocal || r.deletedRemote) parts.push(`deleted ${r.deletedLocal} here, ${r.deletedRemote} there`);
  if (r.conflicts.length) parts.push(`conflicts kept: ${r.conflicts.join(", ")}`);
  if (r.skipped) parts.push(`${r.skipped} left for the next step (changed meanwhile)`);
  for (const f of r.flagged) parts.push(`${f}: kept, an active device built on it`);
  return `synced ${parts.join("; ")}`;
}

export function registerSync(program: Command): void {
  const sync = program
    .command("sync")
    .description("end-to-end encrypted sync & share (the server cannot read or forge)");

  const device = sync.command("device").description("this device: enroll, approve another");
  device
    .command("enroll")
    .description("enroll this device (first one of the user: self-signed root; else pending until approved)")
    .addOption(stateOption())
    .requiredOption("--server <url>", "https://host:port of the atrest server")
    .requiredOption("--user <name>", "your atrest user")
    .option("--name <name>", "this device's name", "device")
    .option("--ca <file>", "the server's certificate (pinned as the only CA)")
    .option("--expect-root <fingerprint>", "your user's root fingerprint, from an enrolled device (second device)")
    .option("--password-stdin", "read the account password from standard input")
    .action(async (opts) => {
      const lines = opts.passwordStdin
        ? await readSecretLines(2, () => "password: ")
        : [
            await promptSecret(
              "password: ",
              "your account password",
              "pipe it with --password-stdin, or use a terminal",
            ),
          ];
      const pass =
        process.env.ATREST_SYNC_PASSPHRASE ??
        lines[1] ??
        (await promptSecret(
          "new passphrase for the device keys: ",
          "a passphrase for this device's keys",
          `${SET_PASSPHRASE} (or pipe it as the second line of --password-stdin)`,
        ));
      const m = Number(process.env.ATREST_SYNC_KDF_MEMORY_KIB ?? 65_536);
      const { enroll } = await session();
      const r = await enroll({
        state: resolve(opts.state),
        server: opts.server,
        ...(opts.ca ? { ca: await readFile(opts.ca, "utf8") } : {}),
        user: opts.user,
        password: lines[0] ?? "",
        passphrase: pass,
        name: opts.name,
        ...(opts.expectRoot ? { expectRoot: normalizeFingerprint(opts.expectRoot) } : {}),
        kdf: { m, t: 3, p: 1 },
      });
      out(`device ${r.cert.id} (${r.cert.name})`);
      out(`device fingerprint ${formatFingerprint(r.fingerprint)}`);
      out(`user ${opts.user} root fingerprint ${formatFingerprint(r.root)}`);
      if (r.pending) {
        out(
          `pending: on an enrolled device run  atrest sync device approve ${r.cert.id} --fingerprint '${formatFingerprint(r.fingerprint)}'`,
        );
        out("after comparing the fingerprint shown here with the one shown there");
      }
    });
  device
    .command("approve <id>")
    .description("approve a pending device of yours after comparing its fingerprint")
    .addOption(stateOption())
    .requiredOption("--fingerprint <fp>", "the fingerprint the new device shows")
    .action(async (id: string, opts) => {
      await withSession(opts.state, async (s) => {
        const cert = await s.approve(id, normalizeFingerprint(opts.fingerprint));
        out(`approved ${cert.id} (${cert.name})`);
      });
    });

  const devices = sync.command("devices").description("your devices: list, revoke");
  devices
    .command("list")
    .addOption(stateOption())
    .action(async (opts) => {
      await withSession(opts.state, async (s) => {
        for (const d of (await s.api.devices()).devices) {
          out(
            `${d.id}\t${d.state}\t${d.name}\t${formatFingerprint(d.fingerprint)}${d.id === s.me.id ? "\t(this device)" : ""}`,
          );
        }
      });
    });
  devices
    .command("revoke <id>")
    .description("revoke a device: its regions move to a new epoch; it wipes its copy on next contact")
    .addOption(stateOption())
    .action(async (id: string, opts) => {
      await withSession(opts.state, async (s) => {
        await s.revoke(id);
        out(`revoked ${id}; regions you own moved to a new epoch`);
      });
    });

  sync
    .command("fingerprint")
    .description("this device's and this user's root fingerprints (compare them out of band)")
    .addOption(stateOption())
    .action(async (opts) => {
      await withSession(opts.state, async (s) => {
        const c = await s.chain(s.user, { tofu: true });
        out(`user ${s.user} root fingerprint ${formatFingerprint(c.root)}`);
      });
    });
  sync
    .command("verify <user> <fingerprint>")
    .description("pin another user's chain after comparing their root fingerprint out of band")
    .addOption(stateOption())
    .action(async (user: string, fp: string, opts) => {
      await withSession(opts.state, async (s) => {
        const c = await s.verifyUser(user, normalizeFingerprint(fp));
        out(`verified ${user}: ${c.active.size} active device(s)`);
      });
    });

  const region = sync.command("region").description("regions: create");
  region
    .command("create <label>")
    .description("create a region you own (the label stays on this device)")
    .addOption(stateOption())
    .action(async (label: string, opts) => {
      await withSession(opts.state, async (s) => out(await s.createRegion(label)));
    });
  sync
    .command("regions")
    .description("regions you own or that were shared with you")
    .addOption(stateOption())
    .action(async (opts) => {
      await withSession(opts.state, async (s) => {
        for (const r of await s.api.regions()) out(`${r.id}\towner ${r.owner}\tversion ${r.version}`);
      });
    });
  sync
    .command("retention <region>")
    .description("owner: keep the last N versions or those younger than D days (and their files); legal hold keeps all")
    .addOption(stateOption())
    .requiredOption("--keep-versions <n>", "manifest versions kept")
    .option("--keep-days <d>", "versions younger than this are kept too", "0")
    .option("--legal-hold <on|off>", "keep everything while on", "off")
    .action(async (id: string, opts) => {
      await withSession(opts.state, async (s) => {
        await s.api.setRetention(id, Number(opts.keepVersions), opts.legalHold === "on", Number(opts.keepDays));
        out(`retention of ${id}: ${opts.keepVersions} versions or ${opts.keepDays} days, legal hold ${opts.legalHold}`);
      });
    });
  sync
    .command("sweep <region>")
    .description("delete the region's blobs no kept version names (past their grace period) and release their quota")
    .addOption(stateOption())
    .action(async (id: string, opts) => {
      await withSession(opts.state, async (s) => {
        const r = await s.api.sweep(id);
        out(`swept ${id}: ${r.removed} blob(s) removed, ${r.usedBytes} bytes in use`);
      });
    });
  sync
    .command("share <region> <user>")
    .description("share a region: wraps its keys to every device of the (verified) user")
    .addOption(stateOption())
    .option("--unverified", "share although the user's fingerprint was not verified")
    .action(async (id: string, user: string, opts) => {
      await withSession(opts.state, async (s) => {
        const d = await s.share(id, user, { unverified: opts.unverified === true });
        out(`shared ${id} with ${user} (${d.length} device(s))`);
      });
    });
  sync
    .command("unshare <region> <user>")
    .description("remove a member: the region moves to a new epoch without their devices")
    .addOption(stateOption())
    .action(async (id: string, user: string, opts) => {
      await withSession(opts.state, async (s) => {
        await s.unshare(id, user);
        out(`unshared ${id} from ${user}`);
      });
    });

  const link = sync.command("link").description("share links to one file version: the key stays in the URL fragment");
  link
    .command("create <path>")
    .description("a link to the file's current version (anyone with the URL can fetch it until it expires)")
    .addOption(stateOption())
    .requiredOption("--region <id>", "the region")
    .option("--days <n>", "days until it expires (1..366)", "7")
    .action(async (path: string, opts) => {
      await withSession(opts.state, async (s) =>
        out(await (await links()).createShareLink(s, opts.region, path.replace(/^\/+/, ""), Number(opts.days))),
      );
    });
  link
    .command("list")
    .addOption(stateOption())
    .requiredOption("--region <id>", "the region")
    .action(async (opts) => {
      await withSession(opts.state, async (s) => {
        for (const l of await s.api.links(opts.region)) {
          out(`${l.id}\texpires ${l.expiresAt}\t${l.revoked ? "revoked" : "active"}\t${l.uses} downloads`);
        }
      });
    });
  link
    .command("revoke <id>")
    .addOption(stateOption())
    .requiredOption("--region <id>", "the region")
    .action(async (id: string, opts) => {
      await withSession(opts.state, async (s) => {
        await s.api.revokeLink(opts.region, id);
        out(`revoked link ${id}`);
      });
    });
  link
    .command("get <url>")
    .description("fetch a share link (no account, no state): the fragment's key never leaves this machine")
    .option("--out <path>", "file to write, or a directory ending in /", "./")
    .option("--ca <file>", "the server's certificate (pinned as the only CA)")
    .action(async (url: string, opts) => {
      const r = await (await links()).fetchShareLink(
        url,
        opts.out,
        opts.ca ? await readFile(opts.ca, "utf8") : undefined,
      );
      out(`fetched ${r.path} (${r.size} bytes, verified)`);
    });

  sync
    .command("run <dir>")
    .description("two-way sync of <dir> with a region (rescans on changes and every --interval seconds)")
    .addOption(stateOption())
    .requiredOption("--region <id>", "the region")
    .option("--once", "one sync step, then exit")
    .option("--interval <s>", "seconds between rescans", "30")
    .option("--trust-owner", "sync a region whose owner's fingerprint was not verified")
    .action(async (dir: string, opts) => {
      const root = resolve(dir);
      // every byte a step uploads passes through short-lived Buffers (file reads, container segments, TLS records):
      // a minor GC per 16 MB of them keeps dead ones from piling up over the RSS (as for the server, gc-pacing.ts)
      if (!pacing) {
        pacing = true;
        startGcPacing(); // unref'd: never keeps the process alive
        // V8 grows the young generation up to 128 MiB here when a burst of objects survives a scavenge (a first sync
        // publishing and pinning 5,000 entries: +60 MB of RSS in 2 s). Kept at its initial size it costs a few more
        // scavenges of what is nearly all dead (measured, first sync of 5,000 files / 33 MB at load 15: peak RSS 184 →
        // 162 MB, CPU 17.2 → 13.1 s). The server gets --max-semi-space-size=2 from its launcher; that flag is read
        // only when the heap is set up, this one at every resize, so it works set from here.
        setFlagsFromString("--semi-space-growth-factor=1");
      }
      // SIGTERM/SIGINT stop the run with a consistent state: a step that has not published yet stops at once with
      // nothing sent (its uploads are aborted), one that has keeps what it published, saves its base and leaves the
      // rest to the next run. A second signal ends the process at once (the state is crash-safe, §11).
      const stop = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        if (stop.signal.aborted) process.exit(signal === "SIGINT" ? 130 : 143);
        process.stderr.write(`atrest sync: ${signal}: stopping\n`);
        stop.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const stopped = () => stop.signal.aborted;
      try {
        await withSession(opts.state, async (s) => {
          const { syncStep, wipeIfRevoked } = await engine();
          const step = async (always: boolean) => {
            try {
              const r = await syncStep(s, opts.region, {
                dir: root,
                trustOwner: opts.trustOwner === true,
                progress,
                transfer: bar,
                signal: stop.signal,
              });
              // a continuous run says only what changed (and its first step)
              if (
                always ||
                r.uploaded ||
                r.downloaded ||
                r.deletedLocal ||
                r.deletedRemote ||
                r.renamed ||
                r.skipped ||
                r.flagged.length
              )
                out(summary(r));
            } catch (err) {
              if (stopped() && (err as Error | undefined)?.name === "AbortError") {
                progress("stopped before publishing: nothing was sent, the next run starts over");
                return;
              }
              if (isApiError(err) && err.problemCode === "DEVICE_REVOKED") {
                const w = await wipeIfRevoked(s, [opts.region]);
                if (w.wiped)
                  throw new AtrestError(
                    "REFUSED",
                    `this device was revoked: its synced copy was wiped (${w.files} files)`,
                  );
                throw new AtrestError(
                  "REFUSED",
                  "the server says this device is revoked, but no signed revocation exists: not wiping",
                );
              }
              throw err;
            }
          };
          if (opts.once) return void (await step(true));
          // changes seen while a step runs make the next one start at once (its own downloads too: a no-op step)
          let dirty = false;
          /** Ends the wait between steps early (a change seen by the watcher). */
          let wake = () => {};
          let w: FSWatcher | undefined;
          try {
            w = watch(root, { recursive: true }, () => {
              dirty = true;
              wake();
            });
            w.on("error", (err) => {
              progress(`stopped watching ${root} (${err.message}): rescanning every ${opts.interval} s`);
              w?.close();
            });
          } catch (err) {
            // e.g. the inotify watch limit: the periodic rescan still finds every change
            progress(`not watching ${root} (${(err as Error).message}): rescanning every ${opts.interval} s`);
          }
          try {
            const interval = Math.max(1, Number(opts.interval)) * 1000;
            let last = Number.NEGATIVE_INFINITY;
            let failures = 0;
            let first = true;
            while (!stopped()) {
              if (!(dirty || Date.now() - last >= interval)) {
                // until the next rescan is due or the watcher sees a change (then SETTLE_MS more, so that the writes of
                // one save or one copy make one step)
                const due = new AbortController();
                const onStop = () => due.abort();
                stop.signal.addEventListener("abort", onStop, { once: true });
                wake = () => due.abort();
                await sleep(Math.max(0, last + interval - Date.now()), due.signal);
                stop.signal.removeEventListener("abort", onStop);
                wake = () => {};
                if (dirty && !stopped()) await sleep(SETTLE_MS, stop.signal);
                continue;
              }
              dirty = false;
              last = Date.now();
              try {
                await step(first || failures > 0);
                first = false;
                failures = 0;
              } catch (err) {
                // a server that is down or busy, a file that kept changing: the run goes on and tries again
                if (!transient(err)) throw err;
                failures++;
                const wait = Math.min(interval, 1000 * 2 ** Math.min(failures, 6));
                progress(
                  `step failed (${err instanceof Error ? err.message : String(err)}): again in ${wait / 1000} s`,
                );
                last = Date.now() - interval + wait;
              }
            }
          } finally {
            w?.close();
          }
        });
        if (stopped()) progress("stopped");
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });
  sync
    .command("restore <path>")
    .description("write a file as it was in an older version (the next run uploads it as a new version)")
    .addOption(stateOption())
    .requiredOption("--region <id>", "the region")
    .requiredOption("--version <n>", "manifest version")
    .requiredOption("--dir <dir>", "the synced directory")
    .action(async (path: string, opts) => {
      await withSession(opts.state, async (s) => {
        const to = await (await engine()).restoreFile(
          s,
          opts.region,
          path.replace(/^\/+/, ""),
          Number(opts.version),
          resolve(opts.dir),
        );
        out(`restored ${path} (version ${opts.version}) as ${to}`);
      });
    });
}

/** `atrest sync …` as its own process (main.ts): the same commands and error lines as runCli, without the server's modules. */
export async function runSyncCli(argv: readonly string[]): Promise<number> {
  const program = new Command("atrest").exitOverride().showHelpAfterError();
  registerSync(program);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return typeof process.exitCode === "number" ? process.exitCode : Number(process.exitCode ?? 0);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`atrest: ${message}\n`);
    return err instanceof AtrestError && err.code === "INVALID_INPUT" ? 2 : 1;
  }
}
