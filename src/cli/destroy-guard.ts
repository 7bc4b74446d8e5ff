// The destroy guard (src/keys/destroy-guard.ts) for `atrest kms key destroy` and `atrest kms approve`: the files are
// counted in the data directory's store, whether the key manager is the embedded one or a KMS service (--kms) this
// data directory is bound to. A KMS service alone cannot know atrest's files: without such a data directory the
// command says so and goes on (the custodians' approvals, through the file server, are guarded again).
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { dataPaths, openStore } from "../app.ts";
import type { AuditEvent } from "../audit/types.ts";
import { type DestroyStep, destroyStep } from "../keys/destroy-guard.ts";
import { checkKeyManagerBinding, REMOTE_KMS_FILE, readRemoteKms } from "../keys/key-manager.ts";
import type { KmsAdmin } from "../kms/admin-client.ts";
import { cliActor } from "../service/actor.ts";
import type { MetaStore } from "../store/types.ts";
import { say, withApp } from "./common.ts";

export interface GuardOpts {
  data: string;
  as?: string;
  kms?: string;
  kmsCert?: string;
}

export const ACCEPT_FLAG = "--accept-data-loss";

/** `reason` with the guard's note (what is lost) appended, so the key manager's audit and the approvers see it. */
export const withNote = (reason: string, note: string | undefined): string =>
  note ? `${reason ? `${reason} ` : ""}${note}` : reason;

/** The store of the data dir whose files live under the key manager `opts` names, or why there is none. */
async function storeFor(opts: GuardOpts): Promise<MetaStore | string> {
  const paths = dataPaths(opts.data);
  if (opts.kms && opts.kmsCert) {
    const made = await Promise.all(
      [paths.meta, join(opts.data, REMOTE_KMS_FILE)].map((p) => stat(p).then(Boolean, () => false)),
    );
    if (!made.includes(true)) return `no data directory at ${opts.data}`;
    try {
      await checkKeyManagerBinding(opts.data, paths.kms, { url: opts.kms, certDir: opts.kmsCert });
    } catch {
      return `${opts.data} is bound to another key manager`;
    }
    if (!(await readRemoteKms(opts.data))) return `${opts.data} is not bound to ${opts.kms}`;
  }
  return openStore(paths);
}

/**
 * Runs `run` (the call to the key manager) behind the guard. Refusals and accepted losses are recorded in the data
 * directory's audit log after the key manager call (best effort, like `keys rewrap`: the key manager audits the
 * request itself, with the note in its reason).
 */
export async function guardedDestroy<T>(
  opts: GuardOpts,
  admin: KmsAdmin,
  role: "operator" | "custodian",
  step: Omit<DestroyStep, "howToAccept">,
  run: (note: string | undefined) => Promise<T>,
): Promise<T> {
  const store = await storeFor(opts);
  if (typeof store === "string") {
    process.stderr.write(
      `atrest: warning: ${store}: the files under kek:${step.target.key} were not counted (the key manager cannot ` +
        `know atrest's files); give --data DIR of a file server using this key manager to check them\n`,
    );
    return run(undefined);
  }
  const events: AuditEvent[] = [];
  try {
    return await destroyStep(
      {
        store,
        audit: { record: (e) => events.push(e) },
        versionsOf: async (key) => (await admin.getKey(key)).versions,
      },
      { ...cliActor(opts.as), role },
      { ...step, howToAccept: `add ${ACCEPT_FLAG} to accept that they are lost` },
      run,
    );
  } finally {
    await store.close();
    if (events.length > 0) {
      await withApp(opts.data, async (app) => {
        for (const e of events) app.audit.record(e);
      }).catch((err: Error) => say(`warning: the destroy guard's decision could not be audited: ${err.message}`));
    }
  }
}
