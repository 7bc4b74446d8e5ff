// `atrest kms key|request|approve|reject|policy|rotate-master|audit …`: key lifecycle and governance commands. They
// run against the data directory's embedded key manager through KmsService (authorized and audited like any other
// caller, as a local identity that `--as` names), or against a KMS service with `--kms URL --kms-cert DIR` (the
// identity is then the client certificate).
import { readFile, writeFile } from "node:fs/promises";
import { type Command, Option } from "commander";
import { dataPaths } from "../app.ts";
import { AtrestError } from "../errors.ts";
import { destroyTarget } from "../keys/destroy-guard.ts";
import { type KmsAdmin, LocalAdmin, RemoteAdmin } from "../kms/admin-client.ts";
import type { KmsCaller, KmsRole } from "../kms/api/caller.ts";
import type { KmsRequest, RequestStatus } from "../kms/approvals.ts";
import { localCaller, openEmbeddedKms } from "../kms/embedded.ts";
import type { KeyringKeyInfo } from "../kms/key-info.ts";
import { KEY_TYPES, type KeyType } from "../kms/key-types.ts";
import { readKmsAudit } from "../kms/kms-audit.ts";
import { type ClientPolicy, KEY_OPERATIONS, parseClientPolicy, SECRET_OPERATIONS } from "../kms/policy.ts";
import type { KeyPolicyInput, KmsService } from "../kms/service.ts";
import { dataOption, requireData, say } from "./common.ts";
import { ACCEPT_FLAG, guardedDestroy, withNote } from "./destroy-guard.ts";

interface LocalOpts {
  data: string;
  as?: string;
  kms?: string;
  kmsCert?: string;
}

function asOption(): Option {
  return new Option("--as <name>", "who is acting, for the KMS audit (default: the OS user)").env("ATREST_KMS_AS");
}

/** The target of a governance command: the data dir's embedded KMS (default) or a KMS service (--kms). */
function targetOptions(cmd: Command): Command {
  return cmd
    .addOption(dataOption())
    .addOption(asOption())
    .addOption(new Option("--kms <url>", "KMS service https://host:port (default: the data dir's)").env("ATREST_KMS"))
    .addOption(
      new Option("--kms-cert <dir>", "client certificate directory from `atrest kms client issue`").env(
        "ATREST_KMS_CERT",
      ),
    );
}

/** Opens the data dir's key manager, runs `fn` as a local caller of `role`, always closes. */
export async function withLocalKms<T>(
  opts: LocalOpts,
  role: KmsRole,
  fn: (kms: KmsService, caller: KmsCaller) => T | Promise<T>,
): Promise<T> {
  await requireData(opts.data, undefined);
  const provider = await openEmbeddedKms(dataPaths(opts.data).kms);
  try {
    return await fn(provider.service, localCaller(role, opts.as));
  } finally {
    await provider.close();
  }
}

/**
 * Runs `fn` against the KMS service (--kms, identity = the certificate) or the data dir's embedded KMS as a local
 * identity with `role` (named by --as).
 */
async function withAdmin<T>(opts: LocalOpts, role: KmsRole, fn: (admin: KmsAdmin) => Promise<T>): Promise<T> {
  let admin: KmsAdmin;
  if (opts.kms) {
    if (!opts.kmsCert) throw new AtrestError("INVALID_INPUT", "--kms needs --kms-cert DIR (a client certificate)");
    admin = await RemoteAdmin.connect(opts.kms, opts.kmsCert);
  } else {
    await requireData(opts.data, undefined);
    const provider = await openEmbeddedKms(dataPaths(opts.data).kms);
    admin = new LocalAdmin(provider.service, localCaller(role, opts.as), () => provider.close());
  }
  try {
    return await fn(admin);
  } finally {
    await admin.close();
  }
}

export function positiveInt(what: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
      throw new AtrestError("INVALID_INPUT", `${what} must be a positive integer (got ${JSON.stringify(value)})`);
    }
    return n;
  };
}

const rotationOption = () =>
  new Option("--rotation <policy>", "rotation policy").choices(["auto", "manual", "none"] as const);

function printKey(k: KeyringKeyInfo): void {
  const rot =
    k.rotation.policy === "auto"
      ? `auto every ${k.rotation.periodDays} d, next ${k.rotation.nextRotationAt ?? "?"}`
      : k.rotation.policy;
  process.stdout.write(
    `kek:${k.name}\tcurrent v${k.currentVersion}\tmin decrypt v${k.minDecryptionVersion}\t` +
      `min encrypt v${k.minEncryptionVersion}\trotation ${rot}\torigin ${k.origin}\ttype ${k.type ?? "aes-256-gcm"}` +
      `${k.compromised ? "\tCOMPROMISED" : ""}\n`,
  );
  for (const v of k.versions) printVersion(k, v);
}

function printVersion(k: KeyringKeyInfo, v: KeyringKeyInfo["versions"][number]): void {
  const current = v.version === k.currentVersion ? " (current)" : "";
  const destroy = v.destroyAt ? `\tdestroy at ${v.destroyAt} (request ${v.destroyRequest ?? "?"})` : "";
  process.stdout.write(`kek:${k.name}:v${v.version}\t${v.state}\t${v.createdAt}${current}${destroy}\n`);
}

function json(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function printRequest(r: KmsRequest): void {
  const approvals = r.approvals.map((a) => `${a.custodian}:${a.decision}`).join(",") || "-";
  const got = r.approvals.filter((a) => a.decision === "approve").length;
  process.stdout.write(
    `${r.id}\t${r.kind}\t${r.target}\t${r.status}\t${got}/${r.quorum} approvals (${approvals})\t` +
      `by ${r.requester} (${r.requesterRole})\texpires ${r.expiresAt}${r.result ? `\t${r.result}` : ""}\n`,
  );
}

function requestHint(r: KmsRequest): void {
  if (r.status === "pending") {
    const got = r.approvals.filter((a) => a.decision === "approve").length;
    say(
      `request ${r.id} (${r.kind} ${r.target}) needs ${r.quorum - got} more approval(s) from custodians other than ${r.requester}: atrest kms approve ${r.id}`,
    );
  } else {
    say(`request ${r.id} (${r.kind} ${r.target}) is ${r.status}${r.result ? `: ${r.result}` : ""}`);
  }
}

const STATUSES = ["pending", "executed", "rejected", "failed", "expired"] as const;

function checkStatus(status: string): RequestStatus {
  if (!(STATUSES as readonly string[]).includes(status)) {
    throw new AtrestError("INVALID_INPUT", `--status must be one of ${STATUSES.join(", ")}`);
  }
  return status as RequestStatus;
}

const KEYS_SPLIT = (v: string) =>
  v
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

export function registerKmsKeys(kms: Command): void {
  const key = kms.command("key").description("key-encryption keys: versions, rotation, states, destruction, BYOK");

  targetOptions(key.command("list").description("list keys and their versions"))
    .option("--json", "machine-readable output")
    .action(async (opts: LocalOpts & { json?: boolean }) => {
      await withAdmin(opts, "operator", async (a) => {
        const keys = await a.listKeys();
        if (opts.json) return json(keys);
        for (const k of keys) for (const v of k.versions) printVersion(k, v);
      });
    });

  targetOptions(key.command("show <name>").description("one key: policy, rotation schedule, versions and states"))
    .option("--json", "machine-readable output")
    .action(async (name: string, opts: LocalOpts & { json?: boolean }) => {
      await withAdmin(opts, "operator", async (a) => {
        const k = await a.getKey(name);
        if (opts.json) json(k);
        else printKey(k);
      });
    });

  targetOptions(key.command("create <name>").description("create a key (version 1)"))
    .addOption(
      new Option("--type <type>", "aes-256-gcm (wrap data keys, encrypt), hmac-sha256, ed25519 or ecdsa-p256 (sign)")
        .choices(KEY_TYPES)
        .default("aes-256-gcm"),
    )
    .addOption(rotationOption().default("manual"))
    .option("--rotation-days <days>", "cryptoperiod for --rotation auto", positiveInt("--rotation-days"))
    .option("--pre-active", "create version 1 pre-active (unusable until `kms key state <name> active`)")
    .action(
      async (
        name: string,
        opts: LocalOpts & {
          type: KeyType;
          rotation: "auto" | "manual" | "none";
          rotationDays?: number;
          preActive?: boolean;
        },
      ) => {
        await withAdmin(opts, "operator", async (a) => {
          const k = await a.createKey(name, {
            ...(opts.type !== "aes-256-gcm" ? { type: opts.type } : {}),
            rotation: opts.rotation,
            ...(opts.rotationDays ? { rotationDays: opts.rotationDays } : {}),
            ...(opts.preActive ? { preActive: true } : {}),
          });
          say(
            `created kek:${k.name}:v${k.currentVersion} (${k.type}, ${k.versions[0]?.state}, rotation ${k.rotation.policy})`,
          );
        });
      },
    );

  targetOptions(
    key.command("rotate <name>").description("create a new version that wraps new data keys; older ones still unwrap"),
  ).action(async (name: string, opts: LocalOpts) => {
    await withAdmin(opts, "operator", async (a) => {
      const k = await a.rotateKey(name);
      say(`rotated ${name}: current version is now kek:${k.name}:v${k.currentVersion}`);
    });
  });

  targetOptions(
    key
      .command("policy <name>")
      .description(
        "rotation policy (auto with a cryptoperiod, manual, none) and minimum decryption/encryption versions",
      ),
  )
    .addOption(rotationOption())
    .option("--rotation-days <days>", "cryptoperiod for --rotation auto", positiveInt("--rotation-days"))
    .option(
      "--min-decryption-version <v>",
      "older versions stop decrypting (rewrap still moves them up)",
      positiveInt("--min-decryption-version"),
    )
    .option(
      "--min-encryption-version <v>",
      "lowest version a caller may ask to encrypt with",
      positiveInt("--min-encryption-version"),
    )
    .action(
      async (
        name: string,
        opts: LocalOpts & {
          rotation?: "auto" | "manual" | "none";
          rotationDays?: number;
          minDecryptionVersion?: number;
          minEncryptionVersion?: number;
        },
      ) => {
        await withAdmin(opts, "operator", async (a) => {
          const policy: KeyPolicyInput = {};
          if (opts.rotation) policy.rotation = opts.rotation;
          if (opts.rotationDays) policy.rotationDays = opts.rotationDays;
          if (opts.minDecryptionVersion) policy.minDecryptionVersion = opts.minDecryptionVersion;
          if (opts.minEncryptionVersion) policy.minEncryptionVersion = opts.minEncryptionVersion;
          printKey(await a.setKeyPolicy(name, policy));
        });
      },
    );

  targetOptions(
    key
      .command("state <name> <state>")
      .description(
        "activate a pre-active version, deactivate (decrypt only) or mark compromised (decrypt only, flagged)",
      ),
  )
    .option("--version <v>", "version to change (default: the current one)", positiveInt("--version"))
    .action(async (name: string, state: string, opts: LocalOpts & { version?: number }) => {
      if (state !== "active" && state !== "deactivated" && state !== "compromised") {
        throw new AtrestError(
          "INVALID_INPUT",
          `state must be active, deactivated or compromised (destruction: kms key destroy ${name})`,
        );
      }
      await withAdmin(opts, "operator", async (a) => {
        const version = opts.version ?? (await a.getKey(name)).currentVersion;
        await a.setVersionState(name, version, state);
        say(`kek:${name}:v${version} is now ${state}`);
      });
    });

  targetOptions(
    key
      .command("destroy <name>")
      .description("ask for destruction (dual control): after quorum approval it is scheduled, then erased"),
  )
    .option("--version <v>", "only this version (default: every version of the key)", positiveInt("--version"))
    .option("--waiting-days <days>", "waiting period after approval, 7-30", positiveInt("--waiting-days"), 30)
    .option("--reason <text>", "why (recorded and shown to the approvers)", "")
    .option(ACCEPT_FLAG, "ask although files are still under it: they become unreadable for good (audited)")
    .action(
      async (
        name: string,
        opts: LocalOpts & { version?: number; waitingDays: number; reason: string; acceptDataLoss?: boolean },
      ) => {
        await withAdmin(opts, "operator", async (a) => {
          const step = {
            step: "request" as const,
            target: { key: name, ...(opts.version ? { versions: [opts.version] } : {}) },
            accepted: opts.acceptDataLoss === true,
          };
          const r = await guardedDestroy(opts, a, "operator", step, (note) =>
            a.requestDestroy(name, {
              ...(opts.version ? { version: opts.version } : {}),
              waitingDays: opts.waitingDays,
              reason: withNote(opts.reason, note),
            }),
          );
          requestHint(r);
        });
      },
    );

  targetOptions(
    key.command("cancel-destroy <name>").description("cancel a scheduled destruction during its waiting period"),
  )
    .option("--version <v>", "only this version", positiveInt("--version"))
    .action(async (name: string, opts: LocalOpts & { version?: number }) => {
      await withAdmin(opts, "operator", async (a) => {
        const k = await a.cancelDestroy(name, opts.version);
        say(`destruction of kek:${name}${opts.version ? `:v${opts.version}` : ""} cancelled`);
        printKey(k);
      });
    });

  targetOptions(
    key
      .command("import-params <name>")
      .description("BYOK: an RSA-3072 wrapping public key and a single-use import token (24 h)"),
  )
    .option("--out <file>", "write the wrapping public key (PEM) here instead of stdout")
    .option("--json", "machine-readable output")
    .action(async (name: string, opts: LocalOpts & { out?: string; json?: boolean }) => {
      await withAdmin(opts, "operator", async (a) => {
        const p = await a.importParams(name);
        if (opts.json) return json(p);
        if (opts.out) await writeFile(opts.out, p.publicKeyPem);
        else process.stdout.write(p.publicKeyPem);
        say(`import token: ${p.importToken}`);
        say(
          `algorithm ${p.algorithm}; expires ${p.expiresAt}; then: atrest kms key import ${name} --token … --in FILE`,
        );
      });
    });

  targetOptions(
    key
      .command("import <name>")
      .description("BYOK: import key material wrapped RSA-OAEP-SHA256(ephemeral AES key) ‖ AES-KWP(material)"),
  )
    .requiredOption("--token <token>", "import token from import-params")
    .requiredOption("--in <file>", "the wrapped material (binary)")
    .action(async (name: string, opts: LocalOpts & { token: string; in: string }) => {
      const wrapped = await readFile(opts.in);
      await withAdmin(opts, "operator", async (a) => {
        const k = await a.importKey(name, opts.token, wrapped);
        say(`imported kek:${k.name}:v${k.currentVersion}`);
      });
    });

  targetOptions(
    key
      .command("export <name>")
      .description("ask for the key wrapped to your RSA public key (dual control); fetch with `kms request export`"),
  )
    .requiredOption("--public-key <file>", "RSA public key (PEM, >= 2048 bits) to wrap the key to")
    .option("--version <v>", "version (default: current)", positiveInt("--version"))
    .option("--reason <text>", "why (shown to the approvers)", "")
    .action(async (name: string, opts: LocalOpts & { publicKey: string; version?: number; reason: string }) => {
      const publicKeyPem = await readFile(opts.publicKey, "utf8");
      await withAdmin(opts, "operator", async (a) => {
        requestHint(
          await a.exportKey(name, {
            publicKeyPem,
            reason: opts.reason,
            ...(opts.version ? { version: opts.version } : {}),
          }),
        );
      });
    });

  const request = kms
    .command("request")
    .description("dual-control requests (destroy, export, policy, master rotation)");
  targetOptions(request.command("list").description("requests and their approvals"))
    .option("--status <status>", "only pending|executed|rejected|failed|expired", checkStatus)
    .option("--json", "machine-readable output")
    .action(async (opts: LocalOpts & { status?: RequestStatus; json?: boolean }) => {
      await withAdmin(opts, "auditor", async (a) => {
        const list = await a.listRequests(opts.status);
        if (opts.json) return json(list);
        for (const r of list) printRequest(r);
      });
    });
  targetOptions(request.command("show <id>").description("one request with its parameters and decisions"))
    .option("--json", "machine-readable output")
    .action(async (id: string, opts: LocalOpts & { json?: boolean }) => {
      await withAdmin(opts, "auditor", async (a) => {
        const r = await a.getRequest(id);
        if (opts.json) return json(r);
        printRequest(r);
        process.stdout.write(`reason\t${r.reason || "-"}\nparams\t${JSON.stringify(r.params)}\n`);
        for (const d of r.approvals) process.stdout.write(`${d.at}\t${d.custodian}\t${d.decision}\t${d.reason}\n`);
      });
    });
  targetOptions(
    request.command("export <id>").description("fetch an executed export (the requester only): wrapped key bytes"),
  )
    .requiredOption("--out <file>", "where to write the wrapped key (RSA-OAEP ‖ AES-KWP)")
    .action(async (id: string, opts: LocalOpts & { out: string }) => {
      await withAdmin(opts, "operator", async (a) => {
        const r = await a.fetchExport(id);
        await writeFile(opts.out, r.wrapped, { mode: 0o600 });
        say(`wrote ${r.keyRef} (${r.algorithm}) to ${opts.out}`);
      });
    });

  targetOptions(kms.command("approve <id>").description("approve a request as a custodian; runs at quorum"))
    .option("--reason <text>", "justification (audited)", "")
    .option(ACCEPT_FLAG, "approve a destruction although files are still under it (audited)")
    .action(async (id: string, opts: LocalOpts & { reason: string; acceptDataLoss?: boolean }) => {
      await withAdmin(opts, "custodian", async (a) => {
        const target = destroyTarget(await a.getRequest(id));
        if (!target) return requestHint(await a.approve(id, opts.reason));
        const step = { step: "approve" as const, target, requestId: id, accepted: opts.acceptDataLoss === true };
        requestHint(
          await guardedDestroy(opts, a, "custodian", step, (note) => a.approve(id, withNote(opts.reason, note))),
        );
      });
    });
  targetOptions(kms.command("reject <id>").description("reject a request as a custodian (ends it)"))
    .option("--reason <text>", "why (audited)", "")
    .action(async (id: string, opts: LocalOpts & { reason: string }) => {
      await withAdmin(opts, "custodian", async (a) => requestHint(await a.reject(id, opts.reason)));
    });

  const policy = kms.command("policy").description("per-client key policies (changes need dual control)");
  targetOptions(
    policy.command("set <client>").description("ask to set a client's policy: key globs x operations (a request)"),
  )
    .option("--keys <globs>", "comma-separated key name globs, e.g. 'tenant-*,default'")
    .option("--secrets <globs>", "comma-separated secret name globs, for the secret operations")
    .option("--ops <ops>", `comma-separated operations: ${[...KEY_OPERATIONS, ...SECRET_OPERATIONS].join(", ")}`)
    .option("--file <file>", 'a JSON policy {"rules":[{"keys":[…],"secrets":[…],"ops":[…]}]} instead of --keys/--ops')
    .option("--remove", "ask to remove the client's policy (back to its role's defaults)")
    .option("--reason <text>", "why (shown to the approvers)", "")
    .action(
      async (
        client: string,
        opts: LocalOpts & {
          keys?: string;
          secrets?: string;
          ops?: string;
          file?: string;
          remove?: boolean;
          reason: string;
        },
      ) => {
        let p: ClientPolicy | null;
        if (opts.remove) p = null;
        else if (opts.file) p = parseClientPolicy(JSON.parse(await readFile(opts.file, "utf8")));
        else if ((opts.keys || opts.secrets) && opts.ops)
          p = parseClientPolicy({
            rules: [
              {
                ...(opts.keys ? { keys: KEYS_SPLIT(opts.keys) } : {}),
                ...(opts.secrets ? { secrets: KEYS_SPLIT(opts.secrets) } : {}),
                ops: KEYS_SPLIT(opts.ops),
              },
            ],
          });
        else throw new AtrestError("INVALID_INPUT", "give --keys and/or --secrets with --ops, or --file, or --remove");
        await withAdmin(opts, "admin", async (a) => requestHint(await a.setClientPolicy(client, p, opts.reason)));
      },
    );
  targetOptions(policy.command("show [client]").description("a client's policy, or every stored policy"))
    .option("--json", "machine-readable output")
    .action(async (client: string | undefined, opts: LocalOpts & { json?: boolean }) => {
      await withAdmin(opts, "auditor", async (a) => {
        const list = client
          ? [await a.getClientPolicy(client)].filter((x) => x !== undefined)
          : await a.listClientPolicies();
        if (opts.json) return json(client ? (list[0] ?? null) : list);
        if (client && list.length === 0) say(`${client} has no policy: its role alone applies`);
        for (const p of list) {
          for (const r of p.policy.rules) {
            process.stdout.write(
              `${p.client}\t${r.keys ? `keys ${r.keys.join(",")}` : ""}${r.keys && r.secrets ? "\t" : ""}` +
                `${r.secrets ? `secrets ${r.secrets.join(",")}` : ""}\tops ${r.ops.join(",")}\tset ${p.updatedAt} (${p.updatedBy})\n`,
            );
          }
        }
      });
    });

  targetOptions(
    kms
      .command("rotate-master")
      .description("ask for a new master key (dual control); every key version is re-sealed under it"),
  )
    .option("--reason <text>", "why (shown to the approvers)", "")
    .action(async (opts: LocalOpts & { reason: string }) => {
      await withAdmin(opts, "admin", async (a) => requestHint(await a.requestMasterRotation(opts.reason)));
    });

  const audit = kms.command("audit").description("the key manager's own audit log");
  audit
    .command("tail")
    .description("print the last KMS audit records (decrypted), one JSON object per line (data dir's KMS)")
    .addOption(dataOption())
    .option("-n, --lines <n>", "how many records", positiveInt("--lines"), 20)
    .action(async (opts: LocalOpts & { lines: number }) => {
      await withLocalKms(opts, "auditor", async (svc) => {
        const records = await readKmsAudit(dataPaths(opts.data).kms, svc.keyring);
        for (const r of records.slice(-opts.lines)) process.stdout.write(`${JSON.stringify(r)}\n`);
      });
    });
}
