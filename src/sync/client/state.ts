// The sync client's state directory (docs/sync-protocol.md §8): the device's public certificate and server, its
// private keys and API token sealed under an argon2id key of the passphrase (AES-256-GCM, file mode 0600; no OS
// keyring here, so this file is the fallback), the pinned chains of users, and per region the pinned manifest and
// the last synced view. Region keys are never written: they are opened from envelopes at each run.
import { mkdir, open, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { hashRaw } from "@node-rs/argon2";
import { open as aeadOpen, seal as aeadSeal, NONCE_LENGTH } from "../../crypto/aead.ts";
import { zero } from "../../crypto/bytes.ts";
import { randomBytes } from "../../crypto/random.ts";
import { AtrestError, IntegrityError } from "../../errors.ts";
import { writeFileDurable } from "../../fsutil/durable.ts";
import { alive } from "../../fsutil/process.ts";
import { b64, canonical, unb64 } from "../core/canonical.ts";
import type { ChainPin, DeviceCert } from "../core/chain.ts";
import type { DeviceSecrets } from "../core/keys.ts";
import type { Entry, Manifest, Member, RegionPin } from "../core/manifest.ts";

export interface DeviceFile {
  v: 1;
  server: string;
  /** PEM of the server's certificate, pinned (or absent: system CAs). */
  ca?: string;
  user: string;
  cert: DeviceCert;
}

export interface Secrets extends DeviceSecrets {
  token: string;
}

export interface TrustPin extends ChainPin {
  /** The root fingerprint was compared out of band (`sync verify`), or is the user's own. */
  verified: boolean;
}

/** What the last completed sync step left, per entry id. */
export interface BaseEntry {
  path: string;
  kind: "file" | "dir";
  /** Plaintext SHA-256 ("" for a directory). */
  sha: string;
  size: number;
  mtimeMs: number;
  fver: number;
}

export interface RegionState {
  id: string;
  label: string;
  owner: Member;
  pin?: RegionPin;
  /** The directory `run` syncs (set at the first run). */
  dir?: string;
  base: Record<string, BaseEntry>;
  /**
   * Written just before a step publishes: the entries it uploaded from where they lie locally, with their blob
   * hashes. A step killed after the server took the manifest but before the new base was saved leaves this behind;
   * the next step makes each entry the server still holds with that very blob part of its base (§11).
   */
  pending?: Record<string, PendingEntry>;
}

/** An opened name: [ciphertext, parent, kind, epoch] it was opened under, then name, mtime, plaintext hash. */
export type OpenedName = [string, string, string, number, string, number, string];

/**
 * The tree this device verified at its pin (§7a): the next step replays only the manifests after it. Trusted as much
 * as the rest of the state directory; used only when its version and hash are the pin's.
 */
export interface TreeCache {
  version: number;
  hash: string;
  /** The pinned signed object without its entries. */
  head: Omit<Manifest, "entries">;
  entries: Entry[];
  /** base64 SHA-256 of each entry's canonical form, in the order of `entries` (the root is then only rehashed for what changed). */
  hashes?: string[];
  names: Record<string, OpenedName>;
}

/** A base entry this device is publishing, with the blob (ciphertext SHA-256) it uploaded for it. */
export interface PendingEntry extends BaseEntry {
  hash: string;
}

interface SealedFile {
  v: 1;
  kdf: { alg: "argon2id"; m: number; t: number; p: number; salt: string };
  ct: string;
}

export const DEFAULT_KDF = { m: 65_536, t: 3, p: 1 };

async function kdf(passphrase: string, k: SealedFile["kdf"]): Promise<Buffer> {
  if (k.alg !== "argon2id" || k.m < 8192 || k.t < 1 || k.p < 1)
    throw new IntegrityError("keys.sealed: weak or unknown KDF");
  return hashRaw(passphrase, {
    algorithm: 2,
    memoryCost: k.m,
    timeCost: k.t,
    parallelism: k.p,
    outputLen: 32,
    salt: unb64(k.salt),
  });
}

/** A state directory locked for this process, with the device's secrets open. */
export interface Unlocked {
  state: StateDir;
  device: DeviceFile;
  secrets: Secrets;
  trust: Record<string, TrustPin>;
  release: () => Promise<void>;
}

/**
 * Locks the state directory and opens the device's secrets. Kept apart from the session so that a client can run the
 * argon2id KDF (64 MiB) before it loads the rest of the sync code: the two memory peaks then do not stack.
 */
export async function unlockState(dir: string, passphrase: string): Promise<Unlocked> {
  const state = new StateDir(dir);
  const device = await state.readDevice();
  const release = await state.lock();
  try {
    const secrets = await state.unseal(passphrase, device.cert.id);
    return { state, device, secrets, trust: await state.readTrust(), release };
  } catch (err) {
    await release();
    throw err;
  }
}

export class StateDir {
  readonly root: string;
  constructor(root: string) {
    this.root = root;
  }

  get #device(): string {
    return join(this.root, "device.json");
  }

  async init(): Promise<void> {
    await mkdir(join(this.root, "regions"), { recursive: true, mode: 0o700 });
    await mkdir(join(this.root, "tmp"), { recursive: true, mode: 0o700 });
  }

  get tmp(): string {
    return join(this.root, "tmp");
  }

  async exists(): Promise<boolean> {
    return readFile(this.#device).then(
      () => true,
      () => false,
    );
  }

  async readDevice(): Promise<DeviceFile> {
    try {
      return JSON.parse(await readFile(this.#device, "utf8")) as DeviceFile;
    } catch {
      throw new AtrestError("NOT_FOUND", `no enrolled device in ${this.root} (atrest sync device enroll)`);
    }
  }

  async writeDevice(d: DeviceFile): Promise<void> {
    await writeFileDurable(this.#device, `${JSON.stringify(d, null, 2)}\n`, { mode: 0o600 });
  }

  async seal(passphrase: string, aad: string, secrets: Secrets, params = DEFAULT_KDF): Promise<void> {
    if (passphrase.length < 8) throw new AtrestError("INVALID_INPUT", "the passphrase needs at least 8 characters");
    const k = { alg: "argon2id" as const, ...params, salt: b64(randomBytes(16)) };
    const key = await kdf(passphrase, k);
    const body = canonical({ enc: b64(secrets.enc), sign: b64(secrets.sign), token: secrets.token });
    try {
      const ct = aeadSeal(key, randomBytes(NONCE_LENGTH), body, Buffer.from(`atrest-sync v1 keys ${aad}`));
      const file: SealedFile = { v: 1, kdf: k, ct: b64(ct) };
      await writeFileDurable(join(this.root, "keys.sealed"), `${JSON.stringify(file)}\n`, { mode: 0o600 });
    } finally {
      zero(key, body);
    }
  }

  async unseal(passphrase: string, aad: string): Promise<Secrets> {
    const file = JSON.parse(await readFile(join(this.root, "keys.sealed"), "utf8")) as SealedFile;
    const key = await kdf(passphrase, file.kdf);
    try {
      const body = aeadOpen(key, unb64(file.ct), Buffer.from(`atrest-sync v1 keys ${aad}`));
      const v = JSON.parse(body.toString("utf8")) as { enc: string; sign: string; token: string };
      zero(body);
      return { enc: unb64(v.enc), sign: unb64(v.sign), token: v.token };
    } catch (err) {
      if (err instanceof IntegrityError)
        throw new AtrestError("AUTH_FAILED", "wrong passphrase (keys.sealed does not open)");
      throw err;
    } finally {
      zero(key);
    }
  }

  async readTrust(): Promise<Record<string, TrustPin>> {
    try {
      return JSON.parse(await readFile(join(this.root, "trust.json"), "utf8")) as Record<string, TrustPin>;
    } catch {
      return {};
    }
  }

  async writeTrust(t: Record<string, TrustPin>): Promise<void> {
    await writeFileDurable(join(this.root, "trust.json"), `${JSON.stringify(t, null, 2)}\n`, { mode: 0o600 });
  }

  async readRegion(id: string): Promise<RegionState | undefined> {
    if (!/^[0-9a-f]{32}$/.test(id)) throw new AtrestError("INVALID_INPUT", "a region id is 32 hex digits");
    try {
      return JSON.parse(await readFile(join(this.root, "regions", `${id}.json`), "utf8")) as RegionState;
    } catch {
      return undefined;
    }
  }

  async writeRegion(r: RegionState): Promise<void> {
    await writeFileDurable(join(this.root, "regions", `${r.id}.json`), JSON.stringify(r), { mode: 0o600 });
  }

  async readTree(id: string): Promise<TreeCache | undefined> {
    if (!/^[0-9a-f]{32}$/.test(id)) throw new AtrestError("INVALID_INPUT", "a region id is 32 hex digits");
    try {
      return JSON.parse(await readFile(join(this.root, "regions", `${id}.tree.json`), "utf8")) as TreeCache;
    } catch {
      return undefined;
    }
  }

  async writeTree(id: string, t: TreeCache): Promise<void> {
    await writeFileDurable(join(this.root, "regions", `${id}.tree.json`), JSON.stringify(t), { mode: 0o600 });
  }

  /**
   * One client per state directory: `run.lock` holds the pid of the process using it; a lock whose process is gone
   * (killed) is taken over. Returns the release.
   */
  async lock(): Promise<() => Promise<void>> {
    const path = join(this.root, "run.lock");
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fh = await open(path, "wx", 0o600);
        await fh.writeFile(String(process.pid));
        await fh.close();
        return () => rm(path, { force: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const pid = Number((await readFile(path, "utf8").catch(() => "")).trim());
        if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
          throw new AtrestError("CONFLICT", `another atrest sync (pid ${pid}) is using ${this.root}`);
        }
        await rm(path, { force: true });
      }
    }
    throw new AtrestError("CONFLICT", `cannot lock ${this.root}`);
  }

  /** Forgets everything but what identifies the device (after a remote wipe). */
  async wipe(): Promise<void> {
    await rm(join(this.root, "regions"), { recursive: true, force: true });
    await rm(join(this.root, "keys.sealed"), { force: true });
  }
}
