import type { Command } from "commander";
import { validatePgpFolderOptions } from "../pgp/folder.ts";
import { cliActor } from "../service/actor.ts";
import type { FolderOptions, GroupOptions } from "../store/types.ts";
import { asOption } from "./as.ts";
import { dataOption, say, withApp } from "./common.ts";

function print(rows: object[], json: boolean, line: (row: never) => string): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    return;
  }
  for (const row of rows) process.stdout.write(`${line(row as never)}\n`);
}

function describe(options: FolderOptions | GroupOptions): string {
  const parts = Object.entries(options).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return parts.length ? parts.join(" ") : "-";
}

export function registerFolders(program: Command): void {
  const folder = program.command("folder").description("virtual folders: per-subtree key and OpenPGP rules");

  folder
    .command("add <path>")
    .description("create a folder (global path, e.g. /shared/outbox) or replace its options")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--key <kek>", "key-manager key (KEK) for files written under this folder")
    .option("--allow-key <kek...>", "further KEKs an S3 client may name for one object here (SSE-KMS key id)")
    .option("--pgp <recipient...>", "OpenPGP-encrypt every file written here to these users, @groups or fingerprints")
    .option("--pgp-sign", "also sign those files with the organisation OpenPGP key")
    .option("--pgp-require-certified", "recipients' keys must be certified by a trusted organisation key")
    .option("--pgp-inbound <mode>", "accept only OpenPGP uploads: encrypted, or signed (by a stored key)")
    .action(async (path: string, opts) => {
      await withApp(opts.data, async (app) => {
        const options: FolderOptions = {};
        if (opts.key !== undefined) options.key = opts.key;
        if (opts.allowKey !== undefined) options.allowKeys = opts.allowKey;
        if (opts.pgp || opts.pgpSign || opts.pgpRequireCertified || opts.pgpInbound) {
          options.pgp = await validatePgpFolderOptions(app.admin.pgp(cliActor(opts.as)), {
            recipients: opts.pgp,
            sign: opts.pgpSign,
            requireCertified: opts.pgpRequireCertified,
            inbound: opts.pgpInbound,
          });
        }
        const row = await app.admin.putFolder(cliActor(opts.as), path, options);
        say(`folder ${row.path}: ${describe(row.options)}`);
      });
    });

  folder
    .command("list")
    .description("list folders and their options")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const rows = await app.admin.listFolders(cliActor(opts.as));
        print(rows, opts.json, (f: (typeof rows)[number]) => `${f.path}\t${describe(f.options)}`);
      });
    });

  folder
    .command("rm <path>")
    .description("remove a folder's rules (the directory and its files stay)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (path: string, opts) => {
      await withApp(opts.data, async (app) => {
        await app.admin.removeFolder(cliActor(opts.as), path);
        say(`removed folder rules of ${path}`);
      });
    });

  const group = program.command("group").description("groups: membership is set per user (user add --group)");

  group
    .command("add <name>")
    .description("create a group or replace its options")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--key <kek>", "key-manager key (KEK) for members' files when no folder or user key applies")
    .option("--require-totp", "members' password logins need a TOTP code (set up at their next HTTPS login)")
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        const options: GroupOptions = {};
        if (opts.key !== undefined) options.key = opts.key;
        if (opts.requireTotp) options.requireTotp = true;
        const row = await app.admin.putGroup(cliActor(opts.as), name, options);
        say(`group ${row.name}: ${describe(row.options)}`);
      });
    });

  group
    .command("list")
    .description("list groups with their options and members")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const users = await app.admin.listUsers(cliActor(opts.as));
        const rows = (await app.admin.listGroups(cliActor(opts.as))).map((g) => ({
          ...g,
          members: users.filter((u) => u.groups.includes(g.name)).map((u) => u.name),
        }));
        print(rows, opts.json, (g: (typeof rows)[number]) => {
          return `${g.name}\t${describe(g.options)}\t${g.members.join(",") || "-"}`;
        });
      });
    });

  group
    .command("rm <name>")
    .description("remove a group from the registry")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        await app.admin.removeGroup(cliActor(opts.as), name);
        say(`removed group ${name}`);
      });
    });
}
