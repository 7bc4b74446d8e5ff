import type { Command } from "commander";
import { dataOption, say, withApp } from "./common.ts";

export function registerKms(program: Command): void {
  const kms = program.command("kms").description("key manager (embedded, in the data directory)");
  const key = kms.command("key").description("key-encryption keys");

  key
    .command("list")
    .description("list keys and their versions")
    .addOption(dataOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const keys = await app.keys.listKeys();
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(keys, null, 2)}\n`);
          return;
        }
        for (const k of keys) {
          for (const v of k.versions) {
            const current = v.version === k.currentVersion ? " (current)" : "";
            process.stdout.write(`kek:${k.name}:v${v.version}\t${v.state}\t${v.createdAt}${current}\n`);
          }
        }
      });
    });

  key
    .command("create <name>")
    .description("create a key (version 1)")
    .addOption(dataOption())
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        const k = await app.keys.createKey(name);
        app.audit.record({
          action: "key.create",
          outcome: "success",
          user: "admin",
          keyRef: `kek:${k.name}:v1`,
          protocol: "cli",
        });
        say(`created kek:${k.name}:v${k.currentVersion}`);
      });
    });

  key
    .command("rotate <name>")
    .description("create a new version that wraps new data keys; older versions still unwrap")
    .addOption(dataOption())
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        const k = await app.keys.rotateKey(name);
        const ref = `kek:${k.name}:v${k.currentVersion}`;
        app.audit.record({ action: "key.rotate", outcome: "success", user: "admin", keyRef: ref, protocol: "cli" });
        say(`rotated ${name}: current version is now ${ref}`);
      });
    });
}
