// `atrest kms key …`: key lifecycle commands, run on the data directory's embedded key manager through KmsService
// (authorized and audited like any other caller, as a local identity; `--as` names who acted).
import { type Command, Option } from "commander";
import { dataPaths, initData } from "../app.ts";
import { AtrestError } from "../errors.ts";
import type { KmsCaller, KmsRole } from "../kms/caller.ts";
import { localCaller, openEmbeddedKms } from "../kms/embedded.ts";
import type { KeyringKeyInfo } from "../kms/keyring.ts";
import type { KmsService } from "../kms/service.ts";
import { dataOption, say } from "./common.ts";

interface LocalOpts {
  data: string;
  as?: string;
}

function asOption(): Option {
  return new Option("--as <name>", "who is acting, for the KMS audit (default: the OS user)").env("ATREST_KMS_AS");
}

/** Opens the data dir's key manager, runs `fn` as a local caller of `role`, always closes. */
export async function withLocalKms<T>(
  opts: LocalOpts,
  role: KmsRole,
  fn: (kms: KmsService, caller: KmsCaller) => T | Promise<T>,
): Promise<T> {
  await initData(opts.data);
  const provider = await openEmbeddedKms(dataPaths(opts.data).kms);
  try {
    return await fn(provider.service, localCaller(role, opts.as));
  } finally {
    await provider.close();
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
      `min encrypt v${k.minEncryptionVersion}\trotation ${rot}\torigin ${k.origin}` +
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

export function registerKmsKeys(kms: Command): void {
  const key = kms.command("key").description("key-encryption keys: versions, rotation, states, destruction, BYOK");

  key
    .command("list")
    .description("list keys and their versions")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (opts: LocalOpts & { json?: boolean }) => {
      await withLocalKms(opts, "operator", (svc, me) => {
        const keys = svc.listKeys(me);
        if (opts.json) return json(keys);
        for (const k of keys) for (const v of k.versions) printVersion(k, v);
      });
    });

  key
    .command("show <name>")
    .description("one key: policy, rotation schedule, versions and their states")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--json", "machine-readable output")
    .action(async (name: string, opts: LocalOpts & { json?: boolean }) => {
      await withLocalKms(opts, "operator", (svc, me) => {
        const k = svc.getKey(me, name);
        if (opts.json) json(k);
        else printKey(k);
      });
    });

  key
    .command("create <name>")
    .description("create a key (version 1)")
    .addOption(dataOption())
    .addOption(asOption())
    .addOption(rotationOption().default("manual"))
    .option("--rotation-days <days>", "cryptoperiod for --rotation auto", positiveInt("--rotation-days"))
    .option("--pre-active", "create version 1 pre-active (unusable until `kms key state <name> active`)")
    .action(
      async (
        name: string,
        opts: LocalOpts & { rotation: "auto" | "manual" | "none"; rotationDays?: number; preActive?: boolean },
      ) => {
        await withLocalKms(opts, "operator", (svc, me) => {
          const k = svc.createKey(me, name, {
            rotation: opts.rotation,
            rotationDays: opts.rotationDays,
            preActive: opts.preActive,
          });
          say(`created kek:${k.name}:v${k.currentVersion} (${k.versions[0]?.state}, rotation ${k.rotation.policy})`);
        });
      },
    );

  key
    .command("rotate <name>")
    .description("create a new version that wraps new data keys; older versions still unwrap")
    .addOption(dataOption())
    .addOption(asOption())
    .action(async (name: string, opts: LocalOpts) => {
      await withLocalKms(opts, "operator", (svc, me) => {
        const k = svc.rotateKey(me, name);
        say(`rotated ${name}: current version is now kek:${k.name}:v${k.currentVersion}`);
      });
    });

  key
    .command("policy <name>")
    .description("rotation policy (auto with a cryptoperiod, manual, none) and minimum decryption/encryption versions")
    .addOption(dataOption())
    .addOption(asOption())
    .addOption(rotationOption())
    .option("--rotation-days <days>", "cryptoperiod for --rotation auto", positiveInt("--rotation-days"))
    .option(
      "--min-decryption-version <v>",
      "older versions stop decrypting (rewrap first)",
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
        await withLocalKms(opts, "operator", (svc, me) => {
          const k = svc.setKeyPolicy(me, name, {
            rotation: opts.rotation,
            rotationDays: opts.rotationDays,
            minDecryptionVersion: opts.minDecryptionVersion,
            minEncryptionVersion: opts.minEncryptionVersion,
          });
          printKey(k);
        });
      },
    );

  key
    .command("state <name> <state>")
    .description("activate a pre-active version, deactivate (decrypt only) or mark compromised (decrypt only, flagged)")
    .addOption(dataOption())
    .addOption(asOption())
    .option("--version <v>", "version to change (default: the current one)", positiveInt("--version"))
    .action(async (name: string, state: string, opts: LocalOpts & { version?: number }) => {
      if (state !== "active" && state !== "deactivated" && state !== "compromised") {
        throw new AtrestError(
          "INVALID_INPUT",
          `state must be active, deactivated or compromised (destruction: kms key destroy ${name})`,
        );
      }
      await withLocalKms(opts, "operator", (svc, me) => {
        const version = opts.version ?? svc.getKey(me, name).currentVersion;
        svc.setVersionState(me, name, version, state);
        say(`kek:${name}:v${version} is now ${state}`);
      });
    });
}
