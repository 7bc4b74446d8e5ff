// What the custodian routes (custody-routes.ts) need from below, as types only: the wiring builds it
// (src/wiring/key-custody.ts), the server's options carry it (deps.ts).
import type { KeyInfo } from "../../kms/api/types.ts";

export interface KeyVersionFiles {
  keyRef: string | null;
  files: number;
  /** The key's current version (nothing to rewrap). */
  current: boolean;
}

export interface KeyJobView {
  id: string;
  kind: "rewrap" | "reencrypt";
  key: string;
  state: "running" | "done" | "failed";
  startedBy: string;
  startedAt: string;
  finishedAt?: string;
  total: number;
  done: number;
  skipped: number;
  failed: number;
  bytes: number;
  error?: string;
}

/**
 * The custodian acting: their user name and, with a remote key manager, the envelope of the call they signed
 * (the `atrest-kms-signed` header, src/kms/api/relayed.ts), which the server carries without being able to forge.
 */
export interface CustodyActor {
  user: string;
  signed?: string;
}

/** A dual-control request as the key manager reports it (never secret). */
export type CustodyRequest = Record<string, unknown> & { id: string; status: string };

export interface KeyCustody {
  status(): Promise<KeyVersionFiles[]>;
  whoCanDecrypt(path: string): Promise<Record<string, unknown>>;
  /**
   * Dual control in the key manager. Embedded: each web custodian is their own key-manager caller. Remote: every call
   * must be signed by the person (`signedCalls`); without a signature it throws SignatureRequiredError carrying the
   * statement to sign.
   */
  requests?: {
    list(who: CustodyActor, status?: string): Promise<CustodyRequest[]>;
    requestDestroy(
      who: CustodyActor,
      key: string,
      /** acceptDataLoss: asked for although files are still under the version (the file server's guard refuses else). */
      input: { version?: number; waitingDays?: number; reason?: string; acceptDataLoss?: boolean },
    ): Promise<CustodyRequest>;
    /** Stops a scheduled destruction during its waiting period (one custodian may). */
    cancelDestroy(who: CustodyActor, key: string, version?: number): Promise<Record<string, unknown>>;
    /** acceptDataLoss: the custodian accepts that the files under a version this request destroys are lost. */
    approve(who: CustodyActor, id: string, reason: string, acceptDataLoss?: boolean): Promise<CustodyRequest>;
    reject(who: CustodyActor, id: string, reason: string): Promise<CustodyRequest>;
  };
  /** Calls to the key manager are signed by the custodian (a remote key manager). */
  signedCalls?: boolean;
  /** Sets a key's rotation policy at the key manager, as the custodian's own caller (the key manager audits it). */
  setRotation?(
    who: CustodyActor,
    key: string,
    rotation: { policy: "auto" | "manual" | "none"; periodDays?: number },
  ): Promise<KeyInfo>;
  jobs: {
    list(): KeyJobView[];
    start(
      by: string,
      input: { kind: "rewrap" | "reencrypt"; key: string; version?: number; allVersions?: boolean; to?: string },
    ): KeyJobView;
  };
}
