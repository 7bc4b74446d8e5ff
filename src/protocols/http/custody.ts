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

/** A dual-control request as the key manager reports it (never secret). */
export type CustodyRequest = Record<string, unknown> & { id: string; status: string };

export interface KeyCustody {
  status(): Promise<KeyVersionFiles[]>;
  whoCanDecrypt(path: string): Promise<Record<string, unknown>>;
  /** Dual control in the key manager; undefined for a remote key manager (its custodians hold client certificates). */
  requests?: {
    list(custodian: string, status?: string): Promise<CustodyRequest[]>;
    requestDestroy(
      custodian: string,
      key: string,
      input: { version?: number; waitingDays?: number; reason?: string },
    ): Promise<CustodyRequest>;
    /** Stops a scheduled destruction during its waiting period (one custodian may). */
    cancelDestroy(custodian: string, key: string, version?: number): Promise<Record<string, unknown>>;
    approve(custodian: string, id: string, reason: string): Promise<CustodyRequest>;
    reject(custodian: string, id: string, reason: string): Promise<CustodyRequest>;
  };
  /**
   * Sets a key's rotation policy at the key manager, as the custodian's own caller (the key manager audits it);
   * undefined for a remote key manager.
   */
  setRotation?(
    custodian: string,
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
