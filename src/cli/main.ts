#!/usr/bin/env node
import { Command, Option } from "commander";
import { AtrestError } from "../errors.ts";
import { registerAudit } from "./audit.ts";
import { registerBackup } from "./backup.ts";
import { dataOption, initCommand } from "./common.ts";
import { registerDefender } from "./defender.ts";
import { registerFolders } from "./folders.ts";
import { registerKeys } from "./keys.ts";
import { registerKms } from "./kms.ts";
import { registerPgp } from "./pgp.ts";
import { registerServer } from "./server.ts";
import { registerTriggers } from "./triggers.ts";
import { registerUsers } from "./users.ts";

// Everything atrest writes (keys, metadata, blobs, logs) is private to the service account.
process.umask(0o077);

const program = new Command("atrest")
  .description("File transfer server with every file encrypted at rest under keys held by a key manager")
  .showHelpAfterError()
  .addOption(new Option("--config <file>", "JSON config file").env("ATREST_CONFIG"));

program
  .command("init")
  .description("create the data directory and a dev-mode key manager (key file beside the data)")
  .addOption(dataOption())
  .action(async (opts: { data: string }) => initCommand(opts.data));

registerServer(program);
registerUsers(program);
registerFolders(program);
registerKms(program);
registerKeys(program);
registerBackup(program);
registerAudit(program);
registerTriggers(program);
registerPgp(program);
registerDefender(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // One line on stderr, no stack: the message is written for operators and never contains secrets.
  const message = err instanceof AtrestError || err instanceof Error ? err.message : String(err);
  process.stderr.write(`atrest: ${message}\n`);
  process.exitCode = err instanceof AtrestError && err.code === "INVALID_INPUT" ? 2 : 1;
}
