// The custodian's side: keys with their versions, states and rotation policy (create, rotate, set the policy, ask for
// destruction); pending dual-control requests to approve or reject; rewrap/reencrypt jobs with live progress; who can
// decrypt a file.
import { useEffect, useState } from "preact/hooks";
import { get, post, put, qs } from "./api.ts";
import { type CustodyKey, loadCustodyKey, makeCustodyKey, saveCertificate } from "./custody-key.ts";
import { bytes, when } from "./format.ts";
import { DataTable } from "./table.tsx";
import { ActionForm, Dialog, ErrorText, Field, str, useLoad } from "./ui.tsx";

export type CustodyTab = "keys" | "requests" | "jobs" | "who";

interface Version {
  version: number;
  state: string;
  createdAt?: string;
  destroyAt?: string;
}
interface Key {
  name: string;
  currentVersion: number;
  versions: Version[];
  rotation?: { policy: string; periodDays?: number; nextRotationAt?: string };
  minDecryptionVersion?: number;
  type?: string;
  origin?: string;
  compromised?: boolean;
}
interface Decision {
  custodian: string;
  decision: "approve" | "reject";
  reason: string;
  at: string;
}
interface KmsRequest {
  id: string;
  kind: string;
  target: string;
  params: Record<string, unknown>;
  requester: string;
  reason: string;
  quorum: number;
  createdAt: string;
  expiresAt: string;
  status: string;
  result?: string;
  approvals: Decision[];
}
interface Job {
  id: string;
  kind: string;
  key: string;
  state: string;
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

const Pill = (props: { v: string }) => <span class={`pill ${props.v}`}>{props.v}</span>;

/** The custodian's own signing key for a remote key manager (custody-key.ts), made and kept in this browser. */
function CustodyKeyPanel(props: { user: string }) {
  // null while loading; undefined: none in this browser
  const [key, setKey] = useState<CustodyKey | undefined | null>(null);
  useEffect(() => {
    loadCustodyKey(props.user).then(setKey, () => setKey(undefined));
  }, [props.user]);
  return (
    <section aria-labelledby="ck-title">
      <h2 id="ck-title">Your custody key</h2>
      <p class="muted">
        Needed when the key manager is remote: each request, approval or rejection you make is signed by this key, made
        in this browser and never sent anywhere. The key manager's operator certifies its public key (
        <code>atrest kms client issue {props.user} --role custodian --public-key FILE</code>) and gives you the
        certificate.
      </p>
      {key === null ? (
        <p class="loading">Loading…</p>
      ) : !key ? (
        <ActionForm
          submit="Make my custody key"
          label="Make a custody key"
          action={async () => setKey(await makeCustodyKey(props.user))}
        />
      ) : (
        <>
          <p class="field">
            <label for="ck-pub">Public key (for the key manager's operator)</label>
            <textarea id="ck-pub" class="pem" readOnly rows={4} value={key.publicPem} />
          </p>
          {key.certificate ? (
            <p role="status">Certificate added: your calls to the key manager are signed by this key.</p>
          ) : (
            <ActionForm
              submit="Add certificate"
              label="Add the custody certificate"
              action={async (f) => setKey(await saveCertificate(props.user, str(f, "certificate")))}
            >
              <p class="field">
                <label for="ck-cert">Certificate issued for this key (client.crt)</label>
                <textarea id="ck-cert" class="pem" name="certificate" rows={5} required />
              </p>
            </ActionForm>
          )}
        </>
      )}
    </section>
  );
}

function Keys(props: { user: string }) {
  const keys = useLoad(() => get<{ keys: Key[] }>("/api/v1/keys"), []);
  const [destroy, setDestroy] = useState<Key | undefined>(undefined);
  const [rotation, setRotation] = useState<Key | undefined>(undefined);
  const [note, setNote] = useState("");
  return (
    <>
      <h1>Keys</h1>
      <p class="muted">Key encryption keys held by the key manager; files' data keys are wrapped under them.</p>
      <p role="status">{note}</p>
      <ErrorText error={keys.error} />
      <DataTable
        caption="Keys"
        rows={keys.data?.keys}
        rowKey={(k) => k.name}
        columns={[
          { label: "Key", cell: (k) => <strong>{k.name}</strong> },
          {
            label: "Versions",
            cell: (k) => (
              <ul class="versions">
                {k.versions.map((v) => (
                  <li key={v.version}>
                    v{v.version}
                    {v.version === k.currentVersion ? " (current)" : ""} <Pill v={v.state} />
                    {v.destroyAt && (
                      <>
                        {" "}
                        <span class="pill destroyed">to be destroyed {when(v.destroyAt)}</span>{" "}
                        <button
                          type="button"
                          class="link"
                          onClick={async () => {
                            try {
                              await post(`/api/v1/keys/${encodeURIComponent(k.name)}/cancel-destroy`, {
                                version: v.version,
                              });
                              setNote(`Destruction of ${k.name} v${v.version} cancelled.`);
                              keys.reload();
                            } catch (e) {
                              setNote(`Cancel failed: ${(e as Error).message}`);
                            }
                          }}
                        >
                          Cancel destruction of v{v.version}
                        </button>
                      </>
                    )}
                  </li>
                ))}
              </ul>
            ),
          },
          {
            label: "Rotation",
            cell: (k) =>
              k.rotation
                ? `${k.rotation.policy}${k.rotation.periodDays ? ` every ${k.rotation.periodDays} d` : ""}${k.rotation.nextRotationAt ? `, next ${when(k.rotation.nextRotationAt)}` : ""}`
                : "",
          },
          { label: "Decrypts from", cell: (k) => (k.minDecryptionVersion ? `v${k.minDecryptionVersion}` : "") },
          {
            label: "",
            cell: (k) => (
              <span class="row-actions">
                <button
                  type="button"
                  onClick={async () => {
                    try {
                      const r = await post<Key>(`/api/v1/keys/${encodeURIComponent(k.name)}/rotate`);
                      setNote(`Rotated ${k.name}: v${r.currentVersion} wraps new files.`);
                      keys.reload();
                    } catch (e) {
                      setNote(`Rotate ${k.name} failed: ${(e as Error).message}`);
                    }
                  }}
                >
                  Rotate {k.name}
                </button>
                <button type="button" aria-label={`Rotation policy of ${k.name}`} onClick={() => setRotation(k)}>
                  Policy…
                </button>
                <button type="button" class="danger" onClick={() => setDestroy(k)}>
                  Destroy…
                </button>
              </span>
            ),
          },
        ]}
      />
      <h2>Create a key</h2>
      <ActionForm
        class="filters"
        label="Create a key"
        submit="Create key"
        action={async (f) => {
          await post("/api/v1/keys", { name: str(f, "name") });
          keys.reload();
        }}
      >
        <Field label="Key name" name="name" required />
      </ActionForm>
      {rotation && (
        <RotationDialog
          k={rotation}
          onClose={() => setRotation(undefined)}
          onSaved={(k) => {
            setRotation(undefined);
            setNote(`Rotation of ${k.name}: ${k.rotation?.policy ?? "?"}.`);
            keys.reload();
          }}
        />
      )}
      {destroy && (
        <Dialog title={`Ask to destroy ${destroy.name}`} onClose={() => setDestroy(undefined)}>
          <p>
            Destruction needs the approval of other custodians, then waits before the key material is erased. Files
            under a destroyed version can never be read again.
          </p>
          <ActionForm
            submit="Ask for destruction"
            class="danger"
            action={async (f) => {
              const version = str(f, "version");
              const r = await post<KmsRequest>(`/api/v1/keys/${encodeURIComponent(destroy.name)}/destroy`, {
                ...(version ? { version: Number(version) } : {}),
                waitingDays: Number(str(f, "days") || "30"),
                reason: str(f, "reason"),
                ...(f.get("acceptDataLoss") ? { acceptDataLoss: true } : {}),
              });
              setDestroy(undefined);
              setNote(`Request ${r.id} created: it needs ${r.quorum} approval(s).`);
            }}
          >
            <p class="field">
              <label for="d-version">Version (empty: every version)</label>
              <select id="d-version" name="version">
                <option value="">every version</option>
                {destroy.versions
                  .filter((v) => v.state !== "destroyed")
                  .map((v) => (
                    <option key={v.version} value={String(v.version)}>
                      v{v.version}
                    </option>
                  ))}
              </select>
            </p>
            <Field label="Waiting period, days (7-30)" name="days" type="number" value="30" />
            <Field label="Reason (shown to the approvers)" name="reason" required />
            <AcceptDataLoss id="d-accept" />
          </ActionForm>
        </Dialog>
      )}
      <CustodyKeyPanel user={props.user} />
    </>
  );
}

/**
 * The server refuses a destruction (or its approval) while files are still under the version, naming how many; this
 * is the custodian's explicit, audited acceptance that they are lost.
 */
function AcceptDataLoss(props: { id: string }) {
  return (
    <p class="check">
      <input id={props.id} name="acceptDataLoss" type="checkbox" />
      <label for={props.id}>I accept that these files are lost (audited)</label>
    </p>
  );
}

/** A key's rotation policy: automatic every N days (the key manager rotates it when due), manual, or none. */
function RotationDialog(props: { k: Key; onClose: () => void; onSaved: (k: Key) => void }) {
  const [policy, setPolicy] = useState(props.k.rotation?.policy ?? "manual");
  return (
    <Dialog title={`Rotation policy of ${props.k.name}`} onClose={props.onClose}>
      <ActionForm
        submit="Save policy"
        action={async (f) => {
          const days = str(f, "periodDays");
          const k = await put<Key>(`/api/v1/keys/${encodeURIComponent(props.k.name)}/rotation`, {
            policy,
            ...(policy === "auto" ? { periodDays: Number(days) } : {}),
          });
          props.onSaved(k);
        }}
      >
        <p class="field">
          <label for="r-policy">Policy</label>
          <select id="r-policy" name="policy" value={policy} onChange={(e) => setPolicy(e.currentTarget.value)}>
            <option value="auto">auto: rotate every period</option>
            <option value="manual">manual: rotate by hand</option>
            <option value="none">none: never rotate</option>
          </select>
        </p>
        {policy === "auto" && (
          <p class="field">
            <label for="r-periodDays">Period, days (1-3650)</label>
            <input
              id="r-periodDays"
              name="periodDays"
              type="number"
              min={1}
              max={3650}
              required
              defaultValue={String(props.k.rotation?.periodDays ?? 90)}
            />
          </p>
        )}
      </ActionForm>
    </Dialog>
  );
}

function Requests() {
  const [status, setStatus] = useState("pending");
  const reqs = useLoad(() => get<{ requests: KmsRequest[] }>(`/api/v1/keys/requests${qs({ status })}`), [status]);
  const [deciding, setDeciding] = useState<{ r: KmsRequest; d: "approve" | "reject" } | undefined>(undefined);
  const [note, setNote] = useState("");
  return (
    <>
      <h1>Dual-control requests</h1>
      <p class="muted">
        Destruction, export, client policy and master-key rotation run only after enough other custodians approve. You
        cannot approve your own request; one rejection ends it.
      </p>
      <p class="field narrow">
        <label for="r-status">Show</label>
        <select id="r-status" value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
          <option value="pending">pending</option>
          <option value="">all</option>
          <option value="executed">executed</option>
          <option value="rejected">rejected</option>
          <option value="expired">expired</option>
          <option value="failed">failed</option>
        </select>
      </p>
      <p role="status">{note}</p>
      <ErrorText error={reqs.error} />
      <DataTable
        caption="Requests"
        rows={reqs.data?.requests}
        rowKey={(r) => r.id}
        empty="No request."
        columns={[
          { label: "Request", cell: (r) => <code>{r.id}</code> },
          {
            label: "What",
            cell: (r) => (
              <>
                {r.kind} <strong>{r.target}</strong>
                {r.params && Object.keys(r.params).length > 0 && <span class="muted"> {JSON.stringify(r.params)}</span>}
              </>
            ),
          },
          { label: "Asked by", cell: (r) => `${r.requester}${r.reason ? `: “${r.reason}”` : ""}` },
          { label: "Asked", cell: (r) => when(r.createdAt), class: "time" },
          {
            label: "Approvals",
            cell: (r) => (
              <>
                {r.approvals.filter((a) => a.decision === "approve").length}/{r.quorum}
                <ul class="versions">
                  {r.approvals.map((a) => (
                    <li key={a.custodian + a.at}>
                      <Pill v={a.decision} /> {a.custodian}
                    </li>
                  ))}
                </ul>
              </>
            ),
          },
          { label: "Status", cell: (r) => <Pill v={r.status} /> },
          {
            label: "",
            cell: (r) =>
              r.status === "pending" && (
                <span class="row-actions">
                  <button type="button" onClick={() => setDeciding({ r, d: "approve" })}>
                    Approve
                  </button>
                  <button type="button" class="danger" onClick={() => setDeciding({ r, d: "reject" })}>
                    Reject
                  </button>
                </span>
              ),
          },
        ]}
      />
      {deciding && (
        <Dialog
          title={`${deciding.d === "approve" ? "Approve" : "Reject"} ${deciding.r.kind} of ${deciding.r.target}`}
          onClose={() => setDeciding(undefined)}
        >
          <ActionForm
            submit={deciding.d === "approve" ? "Approve" : "Reject"}
            class={deciding.d === "reject" ? "danger" : undefined}
            action={async (f) => {
              const r = await post<KmsRequest>(
                `/api/v1/keys/requests/${encodeURIComponent(deciding.r.id)}/${deciding.d}`,
                { reason: str(f, "reason"), ...(f.get("acceptDataLoss") ? { acceptDataLoss: true } : {}) },
              );
              setDeciding(undefined);
              setNote(`Request ${r.id}: ${r.status}${r.result ? ` (${r.result})` : ""}.`);
              reqs.reload();
            }}
          >
            <Field label="Justification (audited)" name="reason" required />
            {deciding.d === "approve" && deciding.r.kind === "destroy" && <AcceptDataLoss id="a-accept" />}
          </ActionForm>
        </Dialog>
      )}
    </>
  );
}

function Jobs() {
  const jobs = useLoad(() => get<{ jobs: Job[] }>("/api/v1/keys/jobs"), []);
  const running = jobs.data?.jobs.some((j) => j.state === "running") ?? false;
  useEffect(() => {
    if (!running) return;
    const t = setInterval(jobs.reload, 1000);
    return () => clearInterval(t);
  }, [running, jobs.reload]);
  return (
    <>
      <h1>Rewrap and reencrypt jobs</h1>
      <p class="muted">
        Rewrap puts every file's data key under its key's current version (headers only). Reencrypt gives files new data
        keys and rewrites their data (after a compromise, or to apply changed folder rules).
      </p>
      <ErrorText error={jobs.error} />
      <ActionForm
        class="filters"
        label="Start a job"
        submit="Start job"
        action={async (f) => {
          await post("/api/v1/keys/jobs", { kind: str(f, "kind"), key: str(f, "key") });
          jobs.reload();
        }}
      >
        <p class="field">
          <label for="j-kind">Job</label>
          <select id="j-kind" name="kind">
            <option value="rewrap">rewrap</option>
            <option value="reencrypt">reencrypt</option>
          </select>
        </p>
        <Field label="Key" name="key" required />
      </ActionForm>
      <ul class="jobs">
        {(jobs.data?.jobs ?? []).map((j) => (
          <li key={j.id} class="card">
            <label for={`job-${j.id}`}>
              <strong>
                {j.kind} kek:{j.key}
              </strong>{" "}
              <Pill v={j.state} /> {j.done} of {j.total} file(s)
              {j.failed ? `, ${j.failed} failed` : ""}
              {j.skipped ? `, ${j.skipped} skipped` : ""}
              {j.bytes ? `, ${bytes(j.bytes)}` : ""}
            </label>
            <progress
              id={`job-${j.id}`}
              max={j.total || 1}
              value={j.total ? j.done + j.skipped + j.failed : j.state === "running" ? 0 : 1}
            />
            <p class="muted">
              started by {j.startedBy} at {when(j.startedAt)}
              {j.finishedAt ? `, finished ${when(j.finishedAt)}` : ""}
              {j.error ? ` — ${j.error}` : ""}
            </p>
          </li>
        ))}
      </ul>
    </>
  );
}

function Who() {
  const [report, setReport] = useState<Record<string, unknown> | undefined>(undefined);
  return (
    <>
      <h1>Who can decrypt a file</h1>
      <ActionForm
        class="filters"
        label="Who can decrypt"
        submit="Look up"
        action={async (f) => {
          setReport(undefined);
          setReport(await get(`/api/v1/keys/who-can-decrypt${qs({ path: str(f, "path") })}`));
        }}
      >
        <Field label="File path (global, e.g. /alice/report.pdf)" name="path" required />
      </ActionForm>
      {report && (
        <dl class="report">
          {Object.entries(report).map(([k, v]) => (
            <div key={k}>
              <dt>{k}</dt>
              <dd>{Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : String(v)}</dd>
            </div>
          ))}
        </dl>
      )}
    </>
  );
}

export function Custody(props: { tab: CustodyTab; user: string }) {
  switch (props.tab) {
    case "requests":
      return <Requests />;
    case "jobs":
      return <Jobs />;
    case "who":
      return <Who />;
    default:
      return <Keys user={props.user} />;
  }
}
