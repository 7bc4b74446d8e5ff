import { readFile } from "node:fs/promises";
import type { Command } from "commander";
import { AtrestError } from "../errors.ts";
import { generateUserKey } from "../pgp/generate.ts";
import { unusableReason } from "../pgp/keys.ts";
import { ownerLabel } from "../pgp/keystore.ts";
import type { PgpKeyRow } from "../pgp/types.ts";
import { cliActor } from "../service/actor.ts";
import { asOption } from "./as.ts";
import { dataOption, say, withApp } from "./common.ts";

/** A key file's bytes; `-` reads standard input. */
async function readKeyInput(file: string): Promise<Buffer> {
  if (file !== "-") return readFile(file);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function readPassphrase(): Promise<string> {
  if (process.stdin.isTTY) {
    throw new AtrestError("INVALID_INPUT", "pipe the passphrase on standard input (it is never taken as an argument)");
  }
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}

function summary(k: PgpKeyRow): string {
  const flags = [
    k.revoked ? "revoked" : "",
    k.certifiedBy.length ? "certified" : "",
    k.source === "generated" ? "generated" : "",
  ]
    .filter(Boolean)
    .join(",");
  return [ownerLabel(k), k.fingerprint, k.algorithm, k.expiresAt ?? "never", flags || "-", k.userIds.join("; ")].join(
    "\t",
  );
}

function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function registerPgp(program: Command): void {
  const pgp = program.command("pgp").description("OpenPGP: users' public keys, organisation key, trusted certifiers");
  const key = pgp.command("key").description("users' and groups' OpenPGP public keys");

  key
    .command("import <owner> <file>")
    .description("import an armored or binary public key for a user or @group (file - = stdin); re-import updates it")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (owner: string, file: string, opts) => {
      const input = await readKeyInput(file);
      await withApp(opts.data, async (app) => {
        const row = await app.admin.pgp(cliActor(opts.as)).import(owner, new Uint8Array(input));
        say(
          `${row.revoked ? "stored (revoked)" : "imported"} ${row.fingerprint} for ${ownerLabel(row)}: ${row.userIds.join("; ")}`,
        );
      });
    });

  key
    .command("list")
    .description("list stored keys: owner, fingerprint, algorithm, expiry, flags, user ids")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output (without the armored keys)")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const rows = await app.admin.pgp(cliActor(opts.as)).list();
        if (opts.json) return json(rows.map(({ armored: _, ...r }) => r));
        for (const r of rows) process.stdout.write(`${summary(r)}\n`);
      });
    });

  key
    .command("show <fingerprint>")
    .description("one key's details and whether it can be used to encrypt now")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (fpr: string, opts) => {
      await withApp(opts.data, async (app) => {
        const row = await app.admin.pgp(cliActor(opts.as)).get(fpr);
        const unusable = await unusableReason(await app.admin.pgp(cliActor(opts.as)).parsed(row));
        const { armored: _, ...rest } = row;
        const out = { ...rest, owner: ownerLabel(row), usable: !unusable, ...(unusable ? { unusable } : {}) };
        if (opts.json) return json(out);
        for (const [k, v] of Object.entries(out)) {
          process.stdout.write(`${k}: ${Array.isArray(v) ? v.join(", ") || "-" : String(v ?? "-")}\n`);
        }
      });
    });

  key
    .command("export <fingerprint>")
    .description("print the armored public key")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (fpr: string, opts) => {
      await withApp(opts.data, async (app) => {
        process.stdout.write((await app.admin.pgp(cliActor(opts.as)).get(fpr)).armored);
      });
    });

  key
    .command("revoke <fingerprint> <file>")
    .description("apply a revocation certificate (e.g. gpg's openpgp-revocs.d/<FPR>.rev; - = stdin) to a stored key")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (fpr: string, file: string, opts) => {
      const input = await readKeyInput(file);
      await withApp(opts.data, async (app) => {
        const row = await app.admin.pgp(cliActor(opts.as)).revoke(fpr, input.toString("latin1"));
        say(`${row.fingerprint} (${ownerLabel(row)}) is revoked: it is no longer used as a recipient`);
      });
    });

  key
    .command("rm <fingerprint>")
    .description("remove a stored key (folders naming its owner stop encrypting to it)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (fpr: string, opts) => {
      await withApp(opts.data, async (app) => {
        await app.admin.pgp(cliActor(opts.as)).remove(fpr);
        say(`removed ${fpr}`);
      });
    });

  key
    .command("generate <user>")
    .description(
      "on-demand key pair for a user without one: passphrase from stdin; prints the protected private key once",
    )
    .addOption(dataOption())
    .addOption(asOption())
    .option("--type <type>", "ecc (Ed25519/Cv25519) or rsa (RSA 3072)", "ecc")
    .option("--email <address>", "e-mail address in the user id")
    .option("--expire-days <n>", "key lifetime in days (default: no expiry)", (v) => Number(v))
    .action(async (user: string, opts) => {
      if (opts.type !== "ecc" && opts.type !== "rsa") throw new AtrestError("INVALID_INPUT", "--type is ecc or rsa");
      if (opts.expireDays !== undefined && !(Number.isSafeInteger(opts.expireDays) && opts.expireDays > 0)) {
        throw new AtrestError("INVALID_INPUT", "--expire-days wants a positive number of days");
      }
      const passphrase = await readPassphrase();
      await withApp(opts.data, async (app) => {
        if (!(await app.admin.listUsers(cliActor(opts.as))).some((u) => u.name === user))
          throw new AtrestError("NOT_FOUND", `no such user: ${user}`);
        const { row, privateKey } = await generateUserKey(app.admin.pgp(cliActor(opts.as)), user, passphrase, {
          type: opts.type,
          email: opts.email,
          expireDays: opts.expireDays,
        });
        // The one and only copy of the private key: stdout, for the user. Status goes to stderr.
        process.stdout.write(privateKey);
        process.stderr.write(
          `atrest: generated ${row.fingerprint} for ${user}; the private key above is shown once and not kept\n`,
        );
      });
    });

  const org = pgp.command("org-key").description("the organisation's OpenPGP key (signs files, certifies keys)");

  org
    .command("create")
    .description("create the organisation key; its private half is stored sealed under the key manager")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--name <name>", "user id name", "atrest organisation key")
    .option("--email <address>", "user id e-mail address")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const k = await app.admin
          .pgp(cliActor(opts.as))
          .createOrgKey(opts.email ? { name: opts.name, email: opts.email } : { name: opts.name });
        say(`created organisation key ${k.getFingerprint()} (${k.getUserIDs().join("; ")})`);
      });
    });

  org
    .command("export")
    .description("print the organisation's armored public key (give it to partners to verify signatures)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        process.stdout.write((await app.admin.pgp(cliActor(opts.as)).org.requirePublicKey()).armor());
      });
    });

  org
    .command("certify <fingerprint>")
    .description("certify a stored key with the organisation key (for folders with --pgp-require-certified)")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (fpr: string, opts) => {
      await withApp(opts.data, async (app) => {
        const row = await app.admin.pgp(cliActor(opts.as)).certify(fpr);
        say(`certified ${row.fingerprint} (${ownerLabel(row)})`);
      });
    });

  const trust = pgp.command("trust").description("other organisation keys trusted to certify users' keys");

  trust
    .command("add <file>")
    .description("trust an organisation's public key (armored file, - = stdin) as a certifier")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (file: string, opts) => {
      const input = await readKeyInput(file);
      await withApp(opts.data, async (app) => {
        say(`trusted ${await app.admin.pgp(cliActor(opts.as)).addTrust(input.toString("latin1"))} as a certifier`);
      });
    });

  trust
    .command("list")
    .description("list trusted certifiers (the organisation key is always trusted)")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const own = await app.admin.pgp(cliActor(opts.as)).org.publicKey();
        const rows = [
          ...(own ? [{ fingerprint: own.getFingerprint(), userIds: own.getUserIDs(), organisation: true }] : []),
          ...(await app.admin.pgp(cliActor(opts.as)).listTrust()).map((t) => ({ ...t, organisation: false })),
        ];
        if (opts.json) return json(rows);
        for (const r of rows) {
          process.stdout.write(`${r.fingerprint}\t${r.organisation ? "own" : "added"}\t${r.userIds.join("; ")}\n`);
        }
      });
    });

  trust
    .command("rm <fingerprint>")
    .description("stop trusting a certifier")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (fpr: string, opts) => {
      await withApp(opts.data, async (app) => {
        await app.admin.pgp(cliActor(opts.as)).removeTrust(fpr);
        say(`no longer trusting ${fpr}`);
      });
    });
}
