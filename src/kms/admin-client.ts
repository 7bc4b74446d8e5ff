// Key lifecycle and governance calls as the CLI makes them, against either a data directory's embedded key manager
// (LocalAdmin: KmsService in process, as a local identity) or a KMS service over HTTPS + mTLS (RemoteAdmin: the
// identity is the client certificate). One interface, so every `atrest kms key|request|approve|policy` command works
// the same way in both places.

import type { KmsCaller } from "./api/caller.ts";
import { RemoteKms } from "./api/client.ts";
import type { KmsRequest, RequestStatus } from "./approvals.ts";
import type { ImportParams } from "./byok.ts";
import type { KeyringKeyInfo } from "./key-info.ts";
import type { CreateKeyOptions } from "./key-lifecycle.ts";
import type { ClientPolicy, StoredClientPolicy } from "./policy.ts";
import type { DestroyRequestInput, ExportRequestInput, KeyPolicyInput, KmsService, SettableState } from "./service.ts";

export interface ExportedKey {
  wrapped: Buffer;
  keyRef: string;
  algorithm: string;
}

export interface KmsAdmin {
  /** Who the calls run as (local: asserted name; remote: "certificate"). */
  readonly who: string;
  listKeys(): Promise<KeyringKeyInfo[]>;
  getKey(name: string): Promise<KeyringKeyInfo>;
  createKey(name: string, options: Omit<CreateKeyOptions, "material">): Promise<KeyringKeyInfo>;
  rotateKey(name: string): Promise<KeyringKeyInfo>;
  setKeyPolicy(name: string, policy: KeyPolicyInput): Promise<KeyringKeyInfo>;
  setVersionState(name: string, version: number, state: SettableState): Promise<KeyringKeyInfo>;
  requestDestroy(name: string, input: DestroyRequestInput): Promise<KmsRequest>;
  cancelDestroy(name: string, version?: number): Promise<KeyringKeyInfo>;
  importParams(name: string): Promise<ImportParams>;
  importKey(name: string, importToken: string, wrapped: Buffer): Promise<KeyringKeyInfo>;
  exportKey(name: string, input: ExportRequestInput): Promise<KmsRequest>;
  fetchExport(id: string): Promise<ExportedKey>;
  listRequests(status?: RequestStatus): Promise<KmsRequest[]>;
  getRequest(id: string): Promise<KmsRequest>;
  approve(id: string, reason: string): Promise<KmsRequest>;
  reject(id: string, reason: string): Promise<KmsRequest>;
  setClientPolicy(client: string, policy: ClientPolicy | null, reason: string): Promise<KmsRequest>;
  getClientPolicy(client: string): Promise<StoredClientPolicy | undefined>;
  listClientPolicies(): Promise<StoredClientPolicy[]>;
  requestMasterRotation(reason: string): Promise<KmsRequest>;
  close(): Promise<void>;
}

/** KmsService in this process, called as `caller`. */
export class LocalAdmin implements KmsAdmin {
  readonly #svc: KmsService;
  readonly #me: KmsCaller;
  readonly #close: () => Promise<void>;

  constructor(svc: KmsService, caller: KmsCaller, close: () => Promise<void>) {
    this.#svc = svc;
    this.#me = caller;
    this.#close = close;
  }

  get who(): string {
    return `${this.#me.name} (${this.#me.role})`;
  }

  async listKeys() {
    return this.#svc.listKeys(this.#me);
  }
  async getKey(name: string) {
    return this.#svc.getKey(this.#me, name);
  }
  async createKey(name: string, options: Omit<CreateKeyOptions, "material">) {
    return this.#svc.createKey(this.#me, name, options);
  }
  async rotateKey(name: string) {
    return this.#svc.rotateKey(this.#me, name);
  }
  async setKeyPolicy(name: string, policy: KeyPolicyInput) {
    return this.#svc.setKeyPolicy(this.#me, name, policy);
  }
  async setVersionState(name: string, version: number, state: SettableState) {
    return this.#svc.setVersionState(this.#me, name, version, state);
  }
  async requestDestroy(name: string, input: DestroyRequestInput) {
    return this.#svc.requestDestroy(this.#me, name, input);
  }
  async cancelDestroy(name: string, version?: number) {
    return this.#svc.cancelDestroy(this.#me, name, version);
  }
  async importParams(name: string) {
    return this.#svc.importParams(this.#me, name);
  }
  async importKey(name: string, importToken: string, wrapped: Buffer) {
    return this.#svc.importKey(this.#me, name, importToken, wrapped);
  }
  async exportKey(name: string, input: ExportRequestInput) {
    return this.#svc.exportKey(this.#me, name, input);
  }
  async fetchExport(id: string) {
    return this.#svc.fetchExport(this.#me, id);
  }
  async listRequests(status?: RequestStatus) {
    return this.#svc.listRequests(this.#me, status);
  }
  async getRequest(id: string) {
    return this.#svc.getRequest(this.#me, id);
  }
  async approve(id: string, reason: string) {
    return this.#svc.approve(this.#me, id, reason);
  }
  async reject(id: string, reason: string) {
    return this.#svc.reject(this.#me, id, reason);
  }
  async setClientPolicy(client: string, policy: ClientPolicy | null, reason: string) {
    return this.#svc.setClientPolicy(this.#me, client, policy, reason);
  }
  async getClientPolicy(client: string) {
    return this.#svc.getClientPolicy(this.#me, client);
  }
  async listClientPolicies() {
    return this.#svc.listClientPolicies(this.#me);
  }
  async requestMasterRotation(reason: string) {
    return this.#svc.requestMasterRotation(this.#me, reason);
  }
  close(): Promise<void> {
    return this.#close();
  }
}

const seg = encodeURIComponent;

/** The same calls over the KMS's HTTPS API (paths in docs/kms.md), through RemoteKms's mTLS transport. */
export class RemoteAdmin implements KmsAdmin {
  readonly #kms: RemoteKms;
  readonly who = "this client certificate";

  constructor(kms: RemoteKms) {
    this.#kms = kms;
  }

  static async connect(url: string, certDir: string): Promise<RemoteAdmin> {
    return new RemoteAdmin(await RemoteKms.connect({ url, certDir }));
  }

  async listKeys() {
    return (await this.#kms.call<{ keys: KeyringKeyInfo[] }>("GET", "/v1/keys")).keys;
  }
  getKey(name: string) {
    return this.#kms.call<KeyringKeyInfo>("GET", `/v1/keys/${seg(name)}`);
  }
  createKey(name: string, options: Omit<CreateKeyOptions, "material">) {
    return this.#kms.call<KeyringKeyInfo>("POST", "/v1/keys", { name, ...options });
  }
  rotateKey(name: string) {
    return this.#kms.call<KeyringKeyInfo>("POST", `/v1/keys/${seg(name)}/rotate`, {});
  }
  setKeyPolicy(name: string, policy: KeyPolicyInput) {
    return this.#kms.call<KeyringKeyInfo>("PUT", `/v1/keys/${seg(name)}/policy`, policy);
  }
  setVersionState(name: string, version: number, state: SettableState) {
    return this.#kms.call<KeyringKeyInfo>("PUT", `/v1/keys/${seg(name)}/versions/${version}/state`, { state });
  }
  requestDestroy(name: string, input: DestroyRequestInput) {
    return this.#kms.call<KmsRequest>("POST", `/v1/keys/${seg(name)}/destroy`, input);
  }
  cancelDestroy(name: string, version?: number) {
    return this.#kms.call<KeyringKeyInfo>("POST", `/v1/keys/${seg(name)}/cancel-destroy`, version ? { version } : {});
  }
  importParams(name: string) {
    return this.#kms.call<ImportParams>("POST", `/v1/keys/${seg(name)}/import-params`, {});
  }
  importKey(name: string, importToken: string, wrapped: Buffer) {
    return this.#kms.call<KeyringKeyInfo>("POST", `/v1/keys/${seg(name)}/import`, {
      importToken,
      wrappedMaterial: wrapped.toString("base64"),
    });
  }
  exportKey(name: string, input: ExportRequestInput) {
    return this.#kms.call<KmsRequest>("POST", `/v1/keys/${seg(name)}/export`, input);
  }
  async fetchExport(id: string) {
    const r = await this.#kms.call<{ wrapped: string; keyRef: string; algorithm: string }>(
      "GET",
      `/v1/exports/${seg(id)}`,
    );
    return { wrapped: Buffer.from(r.wrapped, "base64"), keyRef: r.keyRef, algorithm: r.algorithm };
  }
  async listRequests(status?: RequestStatus) {
    const all = (await this.#kms.call<{ requests: KmsRequest[] }>("GET", "/v1/requests")).requests;
    return status ? all.filter((r) => r.status === status) : all;
  }
  getRequest(id: string) {
    return this.#kms.call<KmsRequest>("GET", `/v1/requests/${seg(id)}`);
  }
  approve(id: string, reason: string) {
    return this.#kms.call<KmsRequest>("POST", `/v1/requests/${seg(id)}/approve`, { reason });
  }
  reject(id: string, reason: string) {
    return this.#kms.call<KmsRequest>("POST", `/v1/requests/${seg(id)}/reject`, { reason });
  }
  setClientPolicy(client: string, policy: ClientPolicy | null, reason: string) {
    return this.#kms.call<KmsRequest>("PUT", `/v1/clients/${seg(client)}/policy`, { policy, reason });
  }
  async getClientPolicy(client: string) {
    try {
      return await this.#kms.call<StoredClientPolicy>("GET", `/v1/clients/${seg(client)}/policy`);
    } catch (e) {
      if ((e as { code?: string }).code === "NOT_FOUND") return undefined;
      throw e;
    }
  }
  async listClientPolicies() {
    return (await this.#kms.call<{ policies: StoredClientPolicy[] }>("GET", "/v1/client-policies")).policies;
  }
  requestMasterRotation(reason: string) {
    return this.#kms.call<KmsRequest>("POST", "/v1/master/rotate", { reason });
  }
  close(): Promise<void> {
    return this.#kms.close();
  }
}
