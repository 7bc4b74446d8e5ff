import type { Command } from "commander";
import { Option } from "commander";
import { type App, dataPaths, openStore } from "../app.ts";
import { AtrestError } from "../errors.ts";
import type { KeyJobDeps } from "../keys/jobs.ts";
import { remoteKmsFor } from "../keys/key-manager.ts";
import { progressPrinter } from "../keys/progress.ts";
import { reencrypt } from "../keys/reencrypt.ts";
import { rewrap } from "../keys/rewrap.ts";
import { shredReport } from "../keys/shred-report.ts";
import { whoCanDecrypt } from "../keys/who-can-decrypt.ts";
import { assertKeyName } from "../kms/api/key-ref.ts";
import { actorFields, cliActor } from "../service/actor.ts";
import { openBlobStore } from "../wiring/blob-store.ts";
import { openKeyManager } from "../wiring/key-manager.ts";
import { whoCanDecryptDeps } from "../wiring/who-can-decrypt.ts";
import { asOption } from "./as.ts";
import { dataOption, kmsFromEnv, requireData, say, withApp } from "./common.ts";

function positiveInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < 1) throw new AtrestError("INVALID_INPUT", `${what} must be a positive integer`);
    return n;
  };
}

function keyName(value: string): string {
  assertKeyName(value);
  return value;
}

/**
 * Store, blobs and key manager without the rest of the App: a rewrap must run when the server's own service keys
 * are on a retired version (they are rewrapped by the same run), so it cannot start by unwrapping them.
 */
async function withJobDeps<T>(data: string, fn: (deps: KeyJobDeps) => Promise<T>): Promise<T> {
  const kms = kmsFromEnv();
  await requireData(data, kms);
  const paths = dataPaths(data);
  const opened = await openKeyManager(data, paths.kms, await remoteKmsFor(data, kms));
  const store = openStore(paths);
  const blobs = await openBlobStore(data);
  try {
    return await fn({ store, blobs, keys: opened.keys, dir: paths.keys });
  } finally {
    await blobs.close();
    await store.close();
    await opened.keys.close();
  }
}

function jobDeps(app: App): KeyJobDeps {
  return { store: app.store, blobs: app.vfs.blobs, keys: app.keys, dir: app.paths.keys, logger: app.logger };
}

function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function registerKeys(program: Command): void {
  const keys = program.command("keys").description("the file server's use of keys: rewrap, reencrypt, reports");

  keys
    .command("rewrap")
    .description(
      "rewrap every file's data key under its key's current version (headers only, no data rewritten); " +
        "crash-safe and resumable: run it again after an interruption",
    )
    .addOption(dataOption())
    .addOption(asOption())
    .addOption(new Option("--key <name>", "only files under this key (default: every key)").argParser(keyName))
    .addOption(new Option("--batch <n>", "files per key-manager call").argParser(positiveInt("--batch")))
    .option("--json", "print the report as JSON")
    .action(async (opts) => {
      const report = await withJobDeps(opts.data, (deps) =>
        rewrap(deps, { key: opts.key, batchSize: opts.batch, onProgress: opts.json ? undefined : progressPrinter() }),
      );
      const done = report.keys.reduce((n, k) => n + k.done, 0);
      const failed = report.keys.reduce((n, k) => n + k.failed, 0);
      await withApp(opts.data, async (app) => {
        app.audit.record({
          action: "key.wrap",
          outcome: failed > 0 ? "failure" : "success",
          ...actorFields(cliActor(opts.as)),
          detail: `rewrap ${opts.key ? `kek:${opts.key}` : "all keys"}: ${done} file(s) rewrapped, ${failed} failed`,
        });
      }).catch((err: Error) => say(`warning: the rewrap is done but could not be audited: ${err.message}`));
      // files left on the old version fail the command in both output forms (a script reads the exit code)
      if (failed > 0) process.exitCode = 1;
      if (opts.json) return json(report);
      if (report.repaired > 0) say(`finished ${report.repaired} header(s) of an interrupted run`);
      for (const k of report.keys) {
        say(`kek:${k.key}: ${k.done} file(s) now on v${k.version}, ${k.skipped} skipped, ${k.failed} failed`);
      }
      if (report.serviceKeys.length > 0) say(`service keys rewrapped: ${report.serviceKeys.join(", ")}`);
      for (const f of report.failures) say(`failed: file ${f.nodeId} (${f.keyRef}): ${f.reason}`);
      const rate = report.seconds > 0 ? Math.round(done / report.seconds) : done;
      say(`rewrapped ${done} file(s) in ${report.seconds.toFixed(2)} s (${rate} files/s)`);
    });

  keys
    .command("reencrypt")
    .description(
      "give every file under a key a new data key and rewrite its data into a new blob (after a compromise, or to " +
        "apply changed folder rules); safe beside a running server, resumable",
    )
    .addOption(dataOption())
    .addOption(asOption())
    .addOption(new Option("--key <name>", "files under this key").argParser(keyName).makeOptionMandatory())
    .addOption(
      new Option("--version <v>", "only files under this version (default: all versions below the current)").argParser(
        positiveInt("--version"),
      ),
    )
    .option("--all-versions", "include files under the current version too")
    .addOption(
      new Option("--to <name>", "new key for every file (default: the folder/user/group rule of each file)").argParser(
        keyName,
      ),
    )
    .option("--json", "print the report as JSON")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const report = await reencrypt(
          { ...jobDeps(app), vfs: app.vfs },
          {
            key: opts.key,
            version: opts.version,
            allVersions: opts.allVersions === true,
            to: opts.to,
            onProgress: opts.json ? undefined : progressPrinter(),
          },
        );
        app.audit.record({
          action: "key.wrap",
          outcome: report.failed > 0 ? "failure" : "success",
          ...actorFields(cliActor(opts.as)),
          detail: `reencrypt kek:${opts.key}: ${report.done} file(s), ${report.bytes} bytes, ${report.failed} failed`,
        });
        if (report.failed > 0) process.exitCode = 1;
        if (opts.json) return json(report);
        for (const f of report.failures) say(`failed: file ${f.nodeId} (${f.keyRef}): ${f.reason}`);
        say(
          `reencrypted ${report.done} file(s) (${report.bytes} bytes) in ${report.seconds.toFixed(2)} s, ` +
            `${report.skipped} skipped, ${report.failed} failed`,
        );
      });
    });

  keys
    .command("shred-report")
    .description("list the files that become unreadable if this key version is destroyed")
    .addOption(dataOption())
    .addOption(new Option("--key <name>", "key name").argParser(keyName).makeOptionMandatory())
    .addOption(new Option("--version <v>", "key version").argParser(positiveInt("--version")).makeOptionMandatory())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const report = await shredReport(app.store, app.vfs.tree, opts.key, opts.version);
        if (opts.json) return json(report);
        for (const f of report.files) {
          const version = f.versionId !== undefined ? `\tversion ${f.versionId}` : "";
          process.stdout.write(`${f.path}\t${f.size}\t${f.owner ?? "-"}${version}\n`);
        }
        say(
          `${report.count} file(s), ${report.bytes} bytes become unreadable if ${report.keyRef} is destroyed` +
            (report.count > 0 ? " (rewrap first to keep them)" : ""),
        );
      });
    });

  keys
    .command("who-can-decrypt <path>")
    .description("show which key protects a file (global path), which key manager holds it and its state")
    .addOption(dataOption())
    .option("--json", "machine-readable output")
    .action(async (path: string, opts) => {
      await withApp(opts.data, async (app) => {
        const info = await whoCanDecrypt(whoCanDecryptDeps(app), path);
        if (opts.json) return json(info);
        for (const [k, v] of Object.entries(info)) {
          if (v === undefined) continue;
          process.stdout.write(`${k.padEnd(18)}${typeof v === "string" ? v : JSON.stringify(v)}\n`);
        }
      });
    });

  keys
    .command("status")
    .description("files per key version (what a rotation left to rewrap)")
    .addOption(dataOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const counts = await app.store.keyRefCounts();
        const current = new Map((await app.keys.listKeys()).map((k) => [k.name, k.currentVersion]));
        const rows = counts.map((c) => {
          const m = c.keyRef ? /^kek:(.+):v(\d+)$/.exec(c.keyRef) : null;
          const cur = m ? current.get(m[1] as string) : undefined;
          return { keyRef: c.keyRef, files: c.files, current: m ? Number(m[2]) === cur : false };
        });
        if (opts.json) return json(rows);
        for (const r of rows) {
          process.stdout.write(`${r.keyRef ?? "(none)"}\t${r.files}\t${r.current ? "current" : "needs rewrap"}\n`);
        }
      });
    });
}
