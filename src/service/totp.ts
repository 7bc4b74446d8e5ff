// TOTP second factor (RFC 6238 over RFC 4226 HOTP: HMAC-SHA1, 6 digits, 30 s steps, ±1 step of clock skew), with
// one-time recovery codes. A user enrols (secret + otpauth URI for an authenticator app + 10 recovery codes, all shown
// once), confirms with a first code, and from then on every password login needs a current code or a recovery code.
// The secret is kept sealed under the key manager (keys/sealed-secrets.ts), recovery codes only as SHA-256 digests; a
// code is accepted once (its time step is remembered), so a code seen over someone's shoulder cannot be replayed.
import { createHash, createHmac, randomBytes } from "node:crypto";
import { constantTimeEqual } from "../crypto/bytes.ts";
import { AtrestError } from "../errors.ts";
import type { SecretVault } from "../keys/sealed-secrets.ts";

export const TOTP_STEP_SECONDS = 30;
const DIGITS = 6;
const RECOVERY_CODES = 10;
const B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

export function base32(buf: Buffer): string {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const byte of buf) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

export function fromBase32(s: string): Buffer {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const c of s.replace(/=+$/, "").toUpperCase()) {
    const i = B32.indexOf(c);
    if (i < 0) throw new AtrestError("INVALID_INPUT", "not base32");
    value = (value << 5) | i;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 255);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 4226 HOTP of `counter` (RFC 6238: counter = floor(unix seconds / 30)). */
export function hotp(secret: Buffer, counter: number): string {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac("sha1", secret).update(msg).digest();
  const off = mac[mac.length - 1] & 0xf;
  const bin = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 10 ** DIGITS).padStart(DIGITS, "0");
}

interface TotpRecord {
  secret: string;
  confirmed: boolean;
  recovery: string[];
  /** The last time step a code was accepted for (replay guard). */
  lastStep: number;
}

export interface Enrolment {
  secret: string;
  otpauthUri: string;
  recoveryCodes: string[];
}

const digest = (code: string) => createHash("sha256").update(code.replace(/[\s-]/g, "").toLowerCase()).digest("hex");

/** A user's second factor: none, a code needed (enrolled), or required by policy but not set up yet (enrol). */
export type SecondFactorState = "none" | "enrolled" | "enrol";

export class TotpService {
  readonly #vault: SecretVault;
  readonly #issuer: string;
  readonly #now: () => number;
  /** Whether policy (the user's own flag or a group's) requires a second factor of `user`. */
  #policy: (user: string) => Promise<boolean> = async () => false;

  constructor(vault: SecretVault, issuer = "atrest", now: () => number = Date.now) {
    this.#vault = vault;
    this.#issuer = issuer;
    this.#now = now;
  }

  /** Sets where the requirement comes from (the wiring: user flag or any group with requireTotp). */
  requiredBy(policy: (user: string) => Promise<boolean>): void {
    this.#policy = policy;
  }

  /** Whether policy requires TOTP of `user` (whatever they have set up). */
  policyRequires(user: string): Promise<boolean> {
    return this.#policy(user);
  }

  async state(user: string): Promise<SecondFactorState> {
    if (await this.required(user)) return "enrolled";
    return (await this.#policy(user)) ? "enrol" : "none";
  }

  async #read(user: string): Promise<TotpRecord | undefined> {
    const raw = await this.#vault.get(`totp.${user}`);
    if (!raw) return undefined;
    try {
      return JSON.parse(raw.toString("utf8")) as TotpRecord;
    } finally {
      raw.fill(0);
    }
  }

  async #write(user: string, r: TotpRecord): Promise<void> {
    const buf = Buffer.from(JSON.stringify(r));
    try {
      await this.#vault.put(`totp.${user}`, buf);
    } finally {
      buf.fill(0);
    }
  }

  /** Whether a password login of `user` needs a second factor (enrolled and confirmed). */
  async required(user: string): Promise<boolean> {
    return (await this.#read(user))?.confirmed === true;
  }

  /** Starts (or restarts, while unconfirmed) an enrolment; refuses while a confirmed one is active. */
  async enrol(user: string): Promise<Enrolment> {
    if (await this.required(user)) {
      throw new AtrestError("CONFLICT", "TOTP is already active: disable it first (with a current code)");
    }
    const secret = base32(randomBytes(20));
    const recoveryCodes = Array.from({ length: RECOVERY_CODES }, () => {
      const hex = randomBytes(5).toString("hex");
      return `${hex.slice(0, 5)}-${hex.slice(5)}`;
    });
    await this.#write(user, { secret, confirmed: false, recovery: recoveryCodes.map(digest), lastStep: 0 });
    const label = encodeURIComponent(`${this.#issuer}:${user}`);
    const otpauthUri = `otpauth://totp/${label}?secret=${secret}&issuer=${encodeURIComponent(this.#issuer)}&algorithm=SHA1&digits=${DIGITS}&period=${TOTP_STEP_SECONDS}`;
    return { secret, otpauthUri, recoveryCodes };
  }

  /** Checks a code (or a recovery code, used up) and records it; `confirm` activates a pending enrolment. */
  async verify(user: string, code: string, o: { confirm?: boolean } = {}): Promise<boolean> {
    const r = await this.#read(user);
    if (!r || (!r.confirmed && !o.confirm)) return false;
    const clean = code.replace(/\s/g, "");
    if (/^\d{6}$/.test(clean)) {
      const secret = fromBase32(r.secret);
      const step = Math.floor(this.#now() / 1000 / TOTP_STEP_SECONDS);
      try {
        for (const s of [step - 1, step, step + 1]) {
          if (s <= r.lastStep) continue;
          if (constantTimeEqual(Buffer.from(hotp(secret, s)), Buffer.from(clean))) {
            await this.#write(user, { ...r, confirmed: true, lastStep: s });
            return true;
          }
        }
      } finally {
        secret.fill(0);
      }
      return false;
    }
    if (!r.confirmed) return false;
    const d = digest(clean);
    const i = r.recovery.findIndex((h) => constantTimeEqual(Buffer.from(h), Buffer.from(d)));
    if (i < 0) return false;
    await this.#write(user, { ...r, recovery: r.recovery.filter((_, j) => j !== i) });
    return true;
  }

  async disable(user: string): Promise<void> {
    if (await this.#policy(user)) {
      throw new AtrestError("PERMISSION_DENIED", "TOTP is required for this account (by an administrator)");
    }
    await this.#vault.remove(`totp.${user}`);
  }

  async recoveryLeft(user: string): Promise<number> {
    return (await this.#read(user))?.recovery.length ?? 0;
  }
}
