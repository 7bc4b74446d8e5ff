import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { AtrestError } from "../errors.ts";
import { cliActor } from "../service/actor.ts";
import { parseAuthorizedKeys } from "../service/public-keys.ts";
import { ALL_PERMISSIONS } from "../service/users.ts";
import type { Permission } from "../vfs/types.ts";
import { asOption } from "./as.ts";
import { dataOption, say, withApp } from "./common.ts";

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

/** `--perm /path:list,download` → { "/path": ["list", "download"] }; `*` means every permission. */
export function parsePerms(specs: string[]): Record<string, Permission[]> | undefined {
  if (specs.length === 0) return undefined;
  const out: Record<string, Permission[]> = {};
  for (const spec of specs) {
    const at = spec.lastIndexOf(":");
    if (at <= 0) throw new AtrestError("INVALID_INPUT", `--perm wants PATH:perm,perm (got "${spec}")`);
    const list = spec
      .slice(at + 1)
      .split(",")
      .filter(Boolean);
    out[spec.slice(0, at)] = list.includes("*") ? ALL_PERMISSIONS : (list as Permission[]);
  }
  return out;
}

function quota(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new AtrestError("INVALID_INPUT", `not a quota: ${value}`);
  return n;
}

export function registerUsers(program: Command): void {
  const user = program.command("user").description("manage users");

  user
    .command("add <name>")
    .description("add a user (password from stdin and/or OpenSSH public keys)")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--password-stdin", "read the password from standard input")
    .option("--public-key <file>", "authorized_keys-format public key file (repeatable)", collect, [])
    .option("--group <group>", "group membership (repeatable)", collect, [])
    .option("--home <path>", "home directory in the server's tree (default /<name>)")
    .option(
      "--perm <path:perms>",
      `permissions for a path, perms from ${ALL_PERMISSIONS.join(",")} or * (repeatable)`,
      collect,
      [],
    )
    .option("--quota-bytes <n>", "maximum stored bytes, 0 = unlimited", quota)
    .option("--quota-files <n>", "maximum number of files, 0 = unlimited", quota)
    .option("--role <role>", "admin | custodian | auditor | user (default user)")
    .option("--key <kek>", "key-manager key (KEK) for this user's files when no folder rule applies")
    .option("--require-totp", "password logins need a TOTP code (set up at the first HTTPS login)")
    .action(async (name: string, opts) => {
      const password = opts.passwordStdin ? await readStdin() : undefined;
      if (opts.passwordStdin && !password) throw new AtrestError("INVALID_INPUT", "empty password on stdin");
      const publicKeys: string[] = [];
      for (const file of opts.publicKey as string[]) {
        publicKeys.push(...parseAuthorizedKeys(await readFile(file, "utf8")));
      }
      await withApp(opts.data, async (app) => {
        const u = await app.admin.addUser(cliActor(opts.as), {
          name,
          password,
          publicKeys,
          groups: opts.group,
          home: opts.home,
          permissions: parsePerms(opts.perm),
          quotaBytes: opts.quotaBytes,
          quotaFiles: opts.quotaFiles,
          role: opts.role,
          kek: opts.key,
          requireTotp: opts.requireTotp === true,
        });
        say(
          `added user ${u.name} (${u.role}, home ${u.home}, ${u.publicKeys.length} key(s)${u.passwordHash ? ", password" : ""})`,
        );
      });
    });

  user
    .command("list")
    .description("list users")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const users = (await app.admin.listUsers(cliActor(opts.as))).map((u) => ({
          name: u.name,
          role: u.role,
          home: u.home,
          groups: u.groups,
          key: u.kek,
          auth: [u.passwordHash ? "password" : "", u.publicKeys.length ? `${u.publicKeys.length} key(s)` : ""]
            .filter(Boolean)
            .join("+"),
          usedBytes: u.usedBytes,
          usedFiles: u.usedFiles,
          quotaBytes: u.quotaBytes,
          quotaFiles: u.quotaFiles,
          disabled: u.disabled === true,
        }));
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(users, null, 2)}\n`);
          return;
        }
        for (const u of users) {
          const q = `${u.usedBytes}/${u.quotaBytes || "∞"} bytes, ${u.usedFiles}/${u.quotaFiles || "∞"} files`;
          process.stdout.write(`${u.name}\t${u.role}\t${u.home}\t${u.auth}\t${q}${u.disabled ? "\tdisabled" : ""}\n`);
        }
      });
    });

  user
    .command("set <name>")
    .description("change a user: home, permissions, groups, quotas, TOTP requirement, disable/enable (the rest stays)")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--home <path>", "new home in the server's tree (stored files stay where they are)")
    .option("--perm <path:perms>", "replace the permissions (repeatable, as for user add)", collect, [])
    .option("--group <group>", "replace the groups (repeatable)", collect, [])
    .option("--no-groups", "remove the user from every group")
    .option("--quota-bytes <n>", "maximum stored bytes, 0 = unlimited", quota)
    .option("--quota-files <n>", "maximum number of files, 0 = unlimited", quota)
    .option("--require-totp", "password logins need a TOTP code")
    .option("--no-require-totp", "stop requiring a TOTP code by this user's flag (groups may still require it)")
    .option("--disable", "refuse every login; a running server ends the user's connections within seconds")
    .option("--enable", "allow logins again")
    .action(async (name: string, opts) => {
      if (opts.disable && opts.enable) throw new AtrestError("INVALID_INPUT", "--disable or --enable, not both");
      const groups = opts.groups === false ? [] : (opts.group as string[]).length > 0 ? opts.group : undefined;
      const change = {
        ...(opts.home !== undefined ? { home: opts.home as string } : {}),
        ...(parsePerms(opts.perm) ? { permissions: parsePerms(opts.perm) } : {}),
        ...(groups ? { groups } : {}),
        ...(opts.quotaBytes !== undefined ? { quotaBytes: opts.quotaBytes as number } : {}),
        ...(opts.quotaFiles !== undefined ? { quotaFiles: opts.quotaFiles as number } : {}),
        ...(opts.requireTotp !== undefined ? { requireTotp: opts.requireTotp as boolean } : {}),
        ...(opts.disable ? { disabled: true } : opts.enable ? { disabled: false } : {}),
      };
      if (Object.keys(change).length === 0) throw new AtrestError("INVALID_INPUT", "nothing to change: see --help");
      await withApp(opts.data, async (app) => {
        const u = await app.admin.changeUser(cliActor(opts.as), name, change);
        say(`changed user ${u.name}${u.disabled ? " (disabled)" : ""}`);
      });
    });

  user
    .command("rm <name>")
    .description("remove a user (their files stay; remove them first if they must go)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        await app.admin.removeUser(cliActor(opts.as), name);
        say(`removed user ${name}`);
      });
    });

  const s3 = user.command("s3-key").description("S3 access keys of a user (the secret is shown once)");
  s3.command("add <user>")
    .description("create an access key for <user>; prints the access key id and the secret (shown only now)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string, opts) => {
      await withApp(opts.data, async (app) => {
        const k = await app.s3Keys.add(cliActor(opts.as), name);
        process.stdout.write(`access key id:     ${k.accessKeyId}\nsecret access key: ${k.secretAccessKey}\n`);
        say(`S3 key ${k.accessKeyId} added for ${name}; the secret is not shown again`);
      });
    });
  s3.command("list [user]")
    .description("list access key ids (of <user>, or everyone's); never secrets")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string | undefined, opts) => {
      await withApp(opts.data, async (app) => {
        for (const k of await app.s3Keys.list(cliActor(opts.as), name)) {
          process.stdout.write(`${k.accessKeyId}\t${k.user}\t${k.createdAt}\n`);
        }
      });
    });
  s3.command("rm <user> <access-key-id>")
    .description("remove an access key: requests signed with it are refused at once")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string, id: string, opts) => {
      await withApp(opts.data, async (app) => {
        await app.s3Keys.remove(cliActor(opts.as), name, id);
        say(`removed S3 key ${id} of ${name}`);
      });
    });
}
