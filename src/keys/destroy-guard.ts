// The file server's guard on key destruction: the key manager cannot know how many of atrest's files (current ones
// and kept S3 versions) or service keys are wrapped under a KEK version, so before atrest asks it to destroy one, or
// to approve such a request, every door (CLI, HTTPS custodian routes, the web page through them) asks this guard.
// It refuses while anything would be lost, naming the count, unless the person explicitly accepts the loss; the door
// audits that acceptance. Crypto-shredding stays possible: it just cannot happen by mistake.
import type { AuditEvent, AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import { formatKeyRef, parseKeyRef } from "../kms/api/key-ref.ts";
import { keyRefOfWrapped } from "../kms/api/wrapped.ts";
import type { MetaStore } from "../store/types.ts";
import { serviceKeyContexts } from "./service-keys.ts";

export interface DestroyGuardDeps {
  store: Pick<MetaStore, "keyRefCounts" | "getSetting">;
  /** The key's versions as the key manager reports them (a destroyed version has nothing more to lose). */
  versionsOf(key: string): Promise<readonly { version: number; state: string }[]>;
}

/** What a destruction would make unreadable. */
export interface AtStake {
  key: string;
  /** The versions the destruction covers that are not destroyed yet. */
  versions: number[];
  /** Files (current ones and kept versions) per key ref, only refs with files. */
  files: { keyRef: string; files: number }[];
  /** Server-wide service keys (metadata names, audit) wrapped under these versions: the whole server depends on them. */
  serviceKeys: { setting: string; keyRef: string }[];
  total: number;
}

/** The key and versions a dual-control request destroys, or undefined if it destroys no KEK of atrest's. */
export function destroyTarget(r: object): { key: string; versions?: number[] } | undefined {
  const request = r as { kind?: unknown; target?: unknown; params?: unknown };
  if (request.kind !== "destroy" || typeof request.target !== "string" || request.target.startsWith("kmip:")) {
    return undefined;
  }
  const v = (request.params as { versions?: unknown } | undefined)?.versions;
  const versions = Array.isArray(v) ? v.filter((x): x is number => Number.isSafeInteger(x)) : undefined;
  return { key: request.target, ...(versions ? { versions } : {}) };
}

/** Counts what destroying `versions` of `key` (default: every version not destroyed yet) would lose. */
export async function filesAtStake(
  deps: DestroyGuardDeps,
  key: string,
  versions?: readonly number[],
): Promise<AtStake> {
  const live = (await deps.versionsOf(key)).filter((v) => v.state !== "destroyed").map((v) => v.version);
  const covered = versions ? live.filter((v) => versions.includes(v)) : live;
  const refs = new Set(covered.map((v) => formatKeyRef(key, v)));
  const files: AtStake["files"] = [];
  for (const c of await deps.store.keyRefCounts()) {
    if (c.keyRef && refs.has(c.keyRef) && c.files > 0) files.push({ keyRef: c.keyRef, files: c.files });
  }
  const serviceKeys: AtStake["serviceKeys"] = [];
  for (const setting of Object.keys(await serviceKeyContexts(deps.store))) {
    const wrapped = await deps.store.getSetting(setting);
    if (!wrapped) continue;
    let ref: string;
    try {
      ref = keyRefOfWrapped(wrapped);
    } catch {
      continue; // not a wrapped data key of this format: nothing the KEK decides
    }
    if (refs.has(ref)) serviceKeys.push({ setting, keyRef: ref });
  }
  const total = files.reduce((n, f) => n + f.files, 0);
  return { key, versions: covered, files, serviceKeys, total };
}

/** "2 file(s) under kek:vault:v1, the server's own service key(s) audit.key, metadata.key under kek:default:v1 …". */
export function describeStake(s: AtStake): string {
  const parts = s.files.map((f) => `${f.files} file(s) under ${f.keyRef}`);
  const byRef = new Map<string, string[]>();
  for (const k of s.serviceKeys) byRef.set(k.keyRef, [...(byRef.get(k.keyRef) ?? []), k.setting]);
  for (const [ref, names] of byRef) {
    parts.push(`the server's own service key(s) ${names.join(", ")} under ${ref} (it cannot start without them)`);
  }
  return parts.join(", ");
}

export function anythingAtStake(s: AtStake): boolean {
  return s.total > 0 || s.serviceKeys.length > 0;
}

/**
 * Refuses (CONFLICT) a destruction that would lose files or service keys unless `accepted`; `howToAccept` is the
 * door's own words for the explicit acceptance (a flag, a checkbox). Returns what is at stake for the door's audit.
 */
export async function guardDestroy(
  deps: DestroyGuardDeps,
  target: { key: string; versions?: readonly number[] },
  accepted: boolean,
  howToAccept: string,
): Promise<AtStake> {
  const stake = await filesAtStake(deps, target.key, target.versions);
  if (anythingAtStake(stake) && !accepted) {
    const parsed = stake.files[0] ? parseKeyRef(stake.files[0].keyRef) : undefined;
    const report = parsed
      ? ` (list them: atrest keys shred-report --key ${parsed.name} --version ${parsed.version})`
      : "";
    throw new AtrestError(
      "CONFLICT",
      `destroying ${stake.versions.map((v) => formatKeyRef(target.key, v)).join(", ")} would make unreadable ` +
        `for good ${describeStake(stake)}${report}. ` +
        `Rewrap or reencrypt them first, or ${howToAccept}`,
    );
  }
  return stake;
}

/** The audit detail of an accepted loss (never a secret: key refs and counts). */
export function acceptedLossDetail(step: "request" | "approve", s: AtStake): string {
  return `destroy ${step} with data loss accepted: ${s.total} file(s) lost (${describeStake(s)})`;
}

/** One door's destruction step: asking for a destruction, or approving a request that destroys. */
export interface DestroyStep {
  step: "request" | "approve";
  target: { key: string; versions?: readonly number[] };
  /** The request being approved (audit target). */
  requestId?: string;
  accepted: boolean;
  howToAccept: string;
}

/**
 * Guards `run` (the door's call to the key manager): refused while files are at stake and the loss is not accepted
 * (audited as a failure), else run; an accepted loss is audited after the key manager took the call. `run` receives
 * the note a door adds to the reason it sends (so the key manager's own audit and the approvers see it), if any.
 */
export async function destroyStep<T>(
  deps: DestroyGuardDeps & { audit?: Pick<AuditSink, "record"> },
  actor: Pick<AuditEvent, "user" | "role" | "protocol" | "sourceIp" | "sessionId">,
  s: DestroyStep,
  run: (note: string | undefined) => Promise<T>,
): Promise<T> {
  const event = (outcome: "success" | "failure", detail: string, reason?: string): AuditEvent => ({
    action: s.step === "request" ? "key.request" : "key.approve",
    outcome,
    ...actor,
    target: s.requestId ?? `kek:${s.target.key}`,
    detail,
    ...(reason ? { reason } : {}),
  });
  let stake: AtStake;
  try {
    stake = await guardDestroy(deps, s.target, s.accepted, s.howToAccept);
  } catch (err) {
    if (err instanceof AtrestError && err.code === "CONFLICT") {
      deps.audit?.record(event("failure", `destroy ${s.step} refused: ${err.message}`, "data loss not accepted"));
    }
    throw err;
  }
  if (!anythingAtStake(stake)) return run(undefined);
  const detail = acceptedLossDetail(s.step, stake);
  const out = await run(`[${detail}]`);
  deps.audit?.record(event("success", detail, "data loss accepted"));
  return out;
}
