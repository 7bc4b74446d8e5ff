// Where the master key comes from. The KMS database holds KEKs sealed under the master key; the master key itself is
// never stored in the clear (except by the dev key file, which says so loudly). A source produces it at unseal time:
//   - "shamir": custodians submit k of n shares of an unseal key; the master is stored in kms.db under that key
//     (src/kms/unseal.ts);
//   - "dev-file": the dev key file beside the database (src/kms/master-file.ts), unsealed automatically;
//   - "pkcs11": the master key is a non-extractable AES key in an HSM token (src/kms/hsm/); KEK rows are sealed and
//     opened by the token, unsealed at start with the token's PIN.

import type { MasterKeyLike } from "./seal.ts";

export type MasterSourceKind = "shamir" | "dev-file" | "pkcs11";

export interface UnsealProgress {
  /** True once the master key is available. */
  unsealed: boolean;
  /** Distinct shares accepted towards the threshold (0 after a successful unseal or a reset). */
  progress: number;
  threshold: number;
}

export interface MasterSourceStatus {
  kind: MasterSourceKind;
  threshold: number;
  shares: number;
  progress: number;
}

export interface MasterKeySource {
  readonly kind: MasterSourceKind;
  status(): MasterSourceStatus;
  /** Sources that need no people (key file, HSM) return the master key (caller owns and zeroes it); else undefined. */
  autoUnseal(): Promise<MasterKeyLike | undefined>;
  /**
   * One custodian's share. Returns the master key (caller owns it) once the threshold is reached and the result
   * matches the database's master-key check; a wrong combination throws and resets the progress.
   */
  /** `custodian`: the submitter's identity (client name), counted once in one-share-per-custodian mode. */
  submitShare(text: string, custodian?: string): Promise<UnsealProgress & { master?: Buffer }>;
  /** Drops shares submitted so far. */
  reset(): void;
  /**
   * Stores `master` as the new master key (quorum-gated master-key rotation): call it inside the database
   * transaction that re-seals every KEK version, so both commit or neither. Needs the source unsealed.
   */
  storeMaster(master: MasterKeyLike): void;
  /** The next master key for a rotation (a random buffer; an HSM source generates a new token key). */
  newMaster(): MasterKeyLike;
  /** Forgets everything secret the source holds (on `kms seal` and shutdown). */
  seal(): void;
}
