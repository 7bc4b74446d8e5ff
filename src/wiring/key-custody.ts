// The HTTPS door's key custody (src/protocols/http/custody-routes.ts) over an opened App: files per key version from
// the store, the who-can-decrypt report, the embedded key manager's dual-control requests with each web custodian as
// their own KMS caller (`http:<user>`: operator when asking, custodian when deciding, so the key manager's rule that
// a requester cannot approve their own request holds), and rewrap/reencrypt jobs run in this process (the same jobs
// as `atrest keys rewrap|reencrypt`, with their lock and journal), their progress kept in memory for the web app.
import { randomBytes, randomUUID } from "node:crypto";
import type { AuditSink } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import { type DestroyGuardDeps, destroyStep, destroyTarget } from "../keys/destroy-guard.ts";
import type { JobProgress, KeyJobDeps } from "../keys/jobs.ts";
import { reencrypt } from "../keys/reencrypt.ts";
import { rewrap } from "../keys/rewrap.ts";
import { whoCanDecrypt } from "../keys/who-can-decrypt.ts";
import type { KmsCaller } from "../kms/api/caller.ts";
import {
  canonicalBody,
  decodeSignedCall,
  parseStatement,
  type RelayMethod,
  SignatureRequiredError,
  type SignedKmsCall,
  statementFor,
} from "../kms/api/relayed.ts";
import type { Logger } from "../logger.ts";
import type { CustodyActor, CustodyRequest, KeyCustody, KeyJobView } from "../protocols/http/custody.ts";
import { type AppParts, whoCanDecryptDeps } from "./who-can-decrypt.ts";

export interface CustodyApp extends AppParts {
  paths: { keys: string };
  logger: Logger;
  audit: AuditSink;
}

const MAX_JOBS_KEPT = 50;

const caller = (user: string, role: KmsCaller["role"]): KmsCaller => ({ name: `http:${user}`, role });

export function keyCustody(app: CustodyApp): KeyCustody {
  const jobs = new Map<string, KeyJobView>();
  const deps = (): KeyJobDeps => ({
    store: app.store,
    blobs: app.vfs.blobs,
    keys: app.keys,
    dir: app.paths.keys,
    logger: app.logger,
  });
  const embedded = app.embedded;
  const remote = isRelaying(app.keys) ? app.keys : undefined;
  const req = (r: unknown) => r as CustodyRequest;
  const doors: Doors = embedded
    ? {
        requests: {
          list: async (who, status) =>
            embedded.service
              .listRequests(
                caller(who.user, "custodian"),
                status as Parameters<typeof embedded.service.listRequests>[1],
              )
              .map(req),
          requestDestroy: async (who, key, input) =>
            req(embedded.service.requestDestroy(caller(who.user, "operator"), key, input)),
          cancelDestroy: async (who, key, version) => ({
            ...embedded.service.cancelDestroy(caller(who.user, "custodian"), key, version),
          }),
          approve: async (who, id, reason) => req(embedded.service.approve(caller(who.user, "custodian"), id, reason)),
          reject: async (who, id, reason) => req(embedded.service.reject(caller(who.user, "custodian"), id, reason)),
        },
        // a policy change is the key manager's operator operation: the custodian asks under their own name
        setRotation: async (who, key, r) =>
          embedded.service.setKeyPolicy(caller(who.user, "operator"), key, {
            rotation: r.policy,
            ...(r.periodDays !== undefined ? { rotationDays: r.periodDays } : {}),
          }),
        // the file server reads a request under the custodian's name before it lets them approve it
        getRequest: async (who, id) => req(embedded.service.getRequest(caller(who.user, "custodian"), id)),
      }
    : remote
      ? {
          ...remoteRequests(remote),
          // under the file server's own certificate: reading a request is no decision, and the custodian's signed
          // statement covers only the approval itself
          getRequest: (_who, id) => remote.call<CustodyRequest>("GET", `/v1/requests/${encodeURIComponent(id)}`),
        }
      : {};
  return {
    status: async () => {
      const counts = await app.store.keyRefCounts();
      const current = new Map((await app.keys.listKeys()).map((k) => [k.name, k.currentVersion]));
      return counts.map((c) => {
        const m = c.keyRef ? /^kek:(.+):v(\d+)$/.exec(c.keyRef) : null;
        return { keyRef: c.keyRef, files: c.files, current: m ? Number(m[2]) === current.get(m[1] as string) : false };
      });
    },
    whoCanDecrypt: async (path) => ({ ...(await whoCanDecrypt(whoCanDecryptDeps(app), path)) }),
    ...guardDestroys(app, doors),
    jobs: {
      list: () => [...jobs.values()].reverse(),
      start: (by, input) => {
        if ([...jobs.values()].some((j) => j.state === "running")) {
          throw new AtrestError("CONFLICT", "a key job is already running: wait for it to finish");
        }
        const job: KeyJobView = {
          id: randomUUID(),
          kind: input.kind,
          key: input.key,
          state: "running",
          startedBy: by,
          startedAt: new Date().toISOString(),
          total: 0,
          done: 0,
          skipped: 0,
          failed: 0,
          bytes: 0,
        };
        jobs.set(job.id, job);
        while (jobs.size > MAX_JOBS_KEPT) jobs.delete(jobs.keys().next().value as string);
        const onProgress = (p: JobProgress) => {
          // a rewrap of one key reports that key; keep the figures of the key asked for
          if (p.key !== input.key) return;
          Object.assign(job, { total: p.total, done: p.done, skipped: p.skipped, failed: p.failed, bytes: p.bytes });
        };
        const run =
          input.kind === "rewrap"
            ? rewrap(deps(), { key: input.key, onProgress }).then((r) => {
                for (const k of r.keys) if (k.key === input.key) onProgress(k);
              })
            : reencrypt(
                { ...deps(), vfs: app.vfs },
                { key: input.key, version: input.version, allVersions: input.allVersions, to: input.to, onProgress },
              ).then((r) => onProgress(r));
        void run
          .then(
            () => {
              job.state = job.failed > 0 ? "failed" : "done";
            },
            (err: unknown) => {
              job.state = "failed";
              job.error = err instanceof AtrestError ? err.message : "the job failed (see the server log)";
              if (!(err instanceof AtrestError)) app.logger.error({ err }, "key job failed");
            },
          )
          .finally(() => {
            job.finishedAt = new Date().toISOString();
            app.audit.record({
              action: "key.wrap",
              outcome: job.state === "done" ? "success" : "failure",
              user: by,
              protocol: "http",
              detail: `${job.kind} kek:${job.key}: ${job.done} file(s), ${job.failed} failed`,
            });
          });
        return { ...job };
      },
    },
  };
}

type Doors = Pick<KeyCustody, "requests" | "setRotation" | "signedCalls"> & {
  getRequest?: (who: CustodyActor, id: string) => Promise<CustodyRequest>;
};

const ACCEPT_WEB = 'tick "I accept that these files are lost" (acceptDataLoss: true)';

/**
 * The destroy guard (src/keys/destroy-guard.ts) in front of the key manager's dual control, for the embedded and the
 * remote one alike: a destruction asked for, or an approval of one, that would lose files needs acceptDataLoss.
 */
function guardDestroys(app: CustodyApp, doors: Doors): Pick<KeyCustody, "requests" | "setRotation" | "signedCalls"> {
  const { getRequest, requests, ...rest } = doors;
  if (!requests || !getRequest) return rest;
  const deps: DestroyGuardDeps & { audit: AuditSink } = {
    store: app.store,
    audit: app.audit,
    versionsOf: async (key) => (await app.keys.listKeys()).find((k) => k.name === key)?.versions ?? [],
  };
  const actor = (who: CustodyActor) => ({ user: who.user, role: "custodian", protocol: "http" as const });
  // with a remote key manager the body is the custodian's signed statement: nothing may be added to its reason
  const noted = (reason: string | undefined, note: string | undefined) =>
    doors.signedCalls || !note ? reason : `${reason ? `${reason} ` : ""}${note}`;
  return {
    ...rest,
    requests: {
      ...requests,
      requestDestroy: (who, key, { acceptDataLoss, ...input }) =>
        destroyStep(
          deps,
          actor(who),
          {
            step: "request",
            target: { key, ...(input.version !== undefined ? { versions: [input.version] } : {}) },
            accepted: acceptDataLoss === true,
            howToAccept: ACCEPT_WEB,
          },
          (note) => {
            const reason = noted(input.reason, note);
            return requests.requestDestroy(who, key, { ...input, ...(reason !== undefined ? { reason } : {}) });
          },
        ),
      approve: async (who, id, reason, acceptDataLoss) => {
        const target = destroyTarget(await getRequest(who, id));
        if (!target) return requests.approve(who, id, reason);
        return destroyStep(
          deps,
          actor(who),
          { step: "approve", target, requestId: id, accepted: acceptDataLoss === true, howToAccept: ACCEPT_WEB },
          (note) => requests.approve(who, id, noted(reason, note) ?? ""),
        );
      },
    },
  };
}

interface Relaying {
  audience: string;
  relay<T>(call: SignedKmsCall): Promise<T>;
  call<T>(method: "GET", path: string): Promise<T>;
}

function isRelaying(keys: unknown): keys is Relaying {
  const k = keys as Partial<Relaying>;
  return typeof k.audience === "string" && typeof k.relay === "function" && typeof k.call === "function";
}

/**
 * A remote key manager: the server's own certificate cannot speak for a person, so each custodian call is the
 * person's signed statement of the exact key-manager call, which this server only carries (src/kms/api/relayed.ts).
 * Without one, the refusal hands back the statement to sign; with one, it must be that same call.
 */
function remoteRequests(kms: Relaying): Pick<KeyCustody, "requests" | "setRotation" | "signedCalls"> {
  const run = async <T>(who: CustodyActor, method: RelayMethod, path: string, body: unknown): Promise<T> => {
    if (who.signed === undefined) {
      const statement = statementFor(kms.audience, method, path, body, randomBytes(16).toString("base64url"));
      throw new SignatureRequiredError(
        statement,
        "the key manager is remote: sign this call with your custody key and send it again in the atrest-kms-signed header",
      );
    }
    const call = decodeSignedCall(who.signed);
    const s = parseStatement(call.statement);
    if (s.method !== method || s.path !== path || canonicalBody(s.body) !== canonicalBody(body)) {
      throw new AtrestError(
        "INVALID_INPUT",
        `the signed statement is not this request (it signs ${s.method} ${s.path})`,
      );
    }
    return kms.relay<T>(call);
  };
  const k = (name: string) => `/v1/keys/${encodeURIComponent(name)}`;
  const r = (id: string) => `/v1/requests/${encodeURIComponent(id)}`;
  const req = (x: unknown) => x as CustodyRequest;
  return {
    signedCalls: true,
    requests: {
      list: async (who, status) =>
        (
          await run<{ requests: CustodyRequest[] }>(
            who,
            "GET",
            `/v1/requests${status ? `?status=${status}` : ""}`,
            null,
          )
        ).requests,
      requestDestroy: async (who, key, input) => req(await run(who, "POST", `${k(key)}/destroy`, input)),
      cancelDestroy: (who, key, version) => run(who, "POST", `${k(key)}/cancel-destroy`, { version }),
      approve: async (who, id, reason) => req(await run(who, "POST", `${r(id)}/approve`, { reason })),
      reject: async (who, id, reason) => req(await run(who, "POST", `${r(id)}/reject`, { reason })),
    },
    setRotation: (who, key, p) =>
      run(who, "PUT", `${k(key)}/policy`, {
        rotation: p.policy,
        ...(p.periodDays !== undefined ? { rotationDays: p.periodDays } : {}),
      }),
  };
}
