// `atrest kms secret put|get|list|versions|rm`: versioned application secrets in the key manager. Against a KMS
// service with `--kms URL --kms-cert DIR` (the certificate's role and policy decide), or the data directory's embedded
// key manager as a local identity (`--as`). A value is read from stdin (a hidden prompt on a terminal), never from
// argv; `get` writes it to stdout as it is.
import { type Command, Option } from "commander";
import { dataPaths } from "../app.ts";
import { AtrestError } from "../errors.ts";
import { KmsAppClient, type SecretMeta } from "../kms/api/apps-client.ts";
import type { KmsRole } from "../kms/api/caller.ts";
import { localCaller, openEmbeddedKms } from "../kms/embedded.ts";
import { dataOption, requireData, say } from "./common.ts";
import { positiveInt } from "./kms-keys.ts";
import { readSecretLine } from "./secret-input.ts";

interface Opts {
  data: string;
  as?: string;
  kms?: string;
  kmsCert?: string;
  json?: boolean;
}

interface SecretsTarget {
  put(name: string, value: Buffer, rotateAfterDays?: number | null): Promise<SecretMeta>;
  get(name: string, version?: number): Promise<{ version: number; value: Buffer; rotationDue: boolean }>;
  list(dueOnly: boolean): Promise<SecretMeta[]>;
  versions(name: string): Promise<{
    secret: SecretMeta;
    versions: { version: number; createdAt: string; createdBy: string; destroyed: boolean }[];
  }>;
  remove(name: string): Promise<{ name: string; destroyedVersions: number }>;
  close(): Promise<void>;
}

function target(cmd: Command): Command {
  return cmd
    .addOption(dataOption())
    .addOption(
      new Option("--as <name>", "who is acting, for the KMS audit (default: the OS user)").env("ATREST_KMS_AS"),
    )
    .addOption(new Option("--kms <url>", "KMS service https://host:port (default: the data dir's)").env("ATREST_KMS"))
    .addOption(
      new Option("--kms-cert <dir>", "client certificate directory from `atrest kms client issue`").env(
        "ATREST_KMS_CERT",
      ),
    );
}

async function open(opts: Opts, role: KmsRole): Promise<SecretsTarget> {
  if (opts.kms) {
    if (!opts.kmsCert) throw new AtrestError("INVALID_INPUT", "--kms needs --kms-cert DIR (a client certificate)");
    const c = await KmsAppClient.connect({ url: opts.kms, certDir: opts.kmsCert });
    return {
      put: (n, v, d) => c.putSecret(n, v, d),
      get: (n, v) => c.getSecret(n, v),
      list: (due) => c.listSecrets(due),
      versions: (n) => c.secretVersions(n),
      remove: (n) => c.removeSecret(n),
      close: () => c.close(),
    };
  }
  await requireData(opts.data, undefined);
  const provider = await openEmbeddedKms(dataPaths(opts.data).kms);
  const svc = provider.service;
  const me = localCaller(role, opts.as);
  return {
    put: async (n, v, d) => svc.putSecret(me, n, v, d),
    get: async (n, v) => svc.getSecret(me, n, v),
    list: async (due) => svc.listSecrets(me, due),
    versions: async (n) => svc.secretVersions(me, n),
    remove: async (n) => svc.removeSecret(me, n),
    close: () => provider.close(),
  };
}

async function withTarget<T>(opts: Opts, role: KmsRole, fn: (t: SecretsTarget) => Promise<T>): Promise<T> {
  const t = await open(opts, role);
  try {
    return await fn(t);
  } finally {
    await t.close();
  }
}

/** The whole of piped stdin (one trailing newline dropped), or a hidden line typed at a terminal. */
async function readValue(name: string): Promise<Buffer> {
  if (process.stdin.isTTY) return Buffer.from(await readSecretLine(`value of secret ${name}: `), "utf8");
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(typeof c === "string" ? Buffer.from(c) : (c as Buffer));
  let v = Buffer.concat(chunks);
  chunks.forEach((c) => {
    c.fill(0);
  });
  const cut = v.at(-1) === 0x0a ? (v.at(-2) === 0x0d ? 2 : 1) : 0;
  if (cut) v = v.subarray(0, v.length - cut);
  return v;
}

function printMeta(s: SecretMeta): void {
  const reminder = s.rotateAfterDays ? `rotate after ${s.rotateAfterDays} d (${s.rotateAt})` : "no rotation reminder";
  process.stdout.write(
    `${s.name}\tv${s.currentVersion}\tupdated ${s.updatedAt}\t${reminder}${s.rotationDue ? "\tROTATION DUE" : ""}\n`,
  );
}

export function registerKmsSecrets(kms: Command): void {
  const secret = kms.command("secret").description("versioned application secrets (API keys, passwords) in the KMS");

  target(secret.command("put <name>").description("write a new version; the value is read from stdin"))
    .option(
      "--rotate-after <days>",
      "remind (list as due, audit a warning) this many days after",
      positiveInt("--rotate-after"),
    )
    .option("--no-rotate-after", "clear the rotation reminder")
    .action(async (name: string, opts: Opts & { rotateAfter?: number | false }) => {
      const value = await readValue(name);
      try {
        if (value.length === 0) throw new AtrestError("INVALID_INPUT", "empty value: pipe the secret on stdin");
        const days = opts.rotateAfter === false ? null : opts.rotateAfter;
        await withTarget(opts, "operator", async (t) => {
          const s = await t.put(name, value, days);
          say(`stored secret ${s.name} v${s.currentVersion}${s.rotateAt ? ` (rotate by ${s.rotateAt})` : ""}`);
        });
      } finally {
        value.fill(0);
      }
    });

  target(secret.command("get <name>").description("print a secret's value (current version) to stdout"))
    .option("--version <v>", "this version instead of the current one", positiveInt("--version"))
    .action(async (name: string, opts: Opts & { version?: number }) => {
      await withTarget(opts, "server", async (t) => {
        const s = await t.get(name, opts.version);
        try {
          process.stdout.write(s.value);
          if (process.stdout.isTTY) process.stdout.write("\n");
        } finally {
          s.value.fill(0);
        }
        if (s.rotationDue) process.stderr.write(`atrest: secret ${name} v${s.version} is due for rotation\n`);
      });
    });

  target(secret.command("list").description("secrets and their rotation reminders (never values)"))
    .option("--due", "only those due for rotation")
    .option("--json", "machine-readable output")
    .action(async (opts: Opts & { due?: boolean }) => {
      await withTarget(opts, "operator", async (t) => {
        const list = await t.list(opts.due ?? false);
        if (opts.json) return void process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        for (const s of list) printMeta(s);
      });
    });

  target(secret.command("versions <name>").description("a secret's versions: when, by whom, destroyed or not"))
    .option("--json", "machine-readable output")
    .action(async (name: string, opts: Opts) => {
      await withTarget(opts, "operator", async (t) => {
        const r = await t.versions(name);
        if (opts.json) return void process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
        printMeta(r.secret);
        for (const v of r.versions) {
          process.stdout.write(
            `${name}\tv${v.version}\t${v.createdAt}\tby ${v.createdBy}${v.version === r.secret.currentVersion ? " (current)" : ""}${v.destroyed ? "\tdestroyed" : ""}\n`,
          );
        }
      });
    });

  target(secret.command("rm <name>").description("remove a secret; every version's value is shredded")).action(
    async (name: string, opts: Opts) => {
      await withTarget(opts, "operator", async (t) => {
        const r = await t.remove(name);
        say(`removed secret ${r.name} (${r.destroyedVersions} version(s) shredded)`);
      });
    },
  );
}
