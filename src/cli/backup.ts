import type { Command } from "commander";
import { dataPaths, openStore, storeRestore } from "../app.ts";
import { readManifest, restoreBackup, writeBackup } from "../backup/bundle.ts";
import { AtrestError } from "../errors.ts";
import { dataOption, say, withKeyManager } from "./common.ts";

export function registerBackup(program: Command): void {
  program
    .command("backup")
    .description(
      "write an encrypted, integrity-protected bundle of the file server's metadata (meta.db snapshot, safe while " +
        "the server runs); blobs are ciphertext already: copy data/blobs/ after it",
    )
    .addOption(dataOption())
    .requiredOption("--out <file>", "bundle to write (must not exist)")
    .action(async (opts) => {
      await withKeyManager(opts.data, async ({ keys }) => {
        const store = openStore(dataPaths(opts.data));
        const m = await writeBackup(opts.data, opts.out, keys, store).finally(() => store.close());
        say(`wrote ${opts.out}: ${m.entries.map((e) => `${e.name} (${e.size} bytes)`).join(", ")}`);
      });
    });

  program
    .command("restore")
    .description("restore the metadata from a bundle into a data directory (needs the key manager the backup used)")
    .addOption(dataOption())
    .requiredOption("--in <file>", "bundle from atrest backup")
    .option("--force", "replace an existing meta.db")
    .option("--list", "only show what the bundle holds (no key manager needed)")
    .action(async (opts) => {
      if (opts.list) {
        const { manifest } = await readManifest(opts.in);
        say(`backup of ${manifest.created}`);
        for (const e of manifest.entries) process.stdout.write(`${e.name}\t${e.size}\t${e.sha256}\n`);
        return;
      }
      if (!opts.in) throw new AtrestError("INVALID_INPUT", "--in FILE is required");
      await withKeyManager(opts.data, async ({ keys }) => {
        const m = await restoreBackup(
          opts.in,
          opts.data,
          keys,
          storeRestore(dataPaths(opts.data)),
          opts.force === true,
        );
        say(`restored ${m.entries.map((e) => e.name).join(", ")} of ${m.created} into ${opts.data}`);
        say("now copy the blobs back (data/blobs/) and start the server: it removes blobs the metadata does not know");
      });
    });
}
