// The caller's own account: second factor (TOTP enrolment with a QR code and recovery codes, shown once), their login
// history, and logging out everywhere.
import { useState } from "preact/hooks";
import { del, get, post, type Session } from "./api.ts";
import { when } from "./format.ts";
import { ActionForm, ErrorText, Field, str, useLoad } from "./ui.tsx";

interface Enrolment {
  secret: string;
  otpauthUri: string;
  qrSvg: string;
  recoveryCodes: string[];
}

interface AuditMatch {
  seq: number;
  record: Record<string, unknown>;
}

const svgUrl = (svg: string) => `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(svg)))}`;

export function Totp(props: { onEnabled?: () => void } = {}) {
  const status = useLoad(
    () => get<{ enabled: boolean; required?: boolean; recoveryCodesLeft: number }>("/api/v1/account/totp"),
    [],
  );
  const [enrol, setEnrol] = useState<Enrolment | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [note, setNote] = useState("");
  return (
    <section aria-labelledby="totp-h">
      <h2 id="totp-h">Two-step login (TOTP)</h2>
      <ErrorText error={status.error ?? error} />
      <p role="status">{note}</p>
      {status.data?.enabled ? (
        <>
          <p>
            On. {status.data.recoveryCodesLeft} recovery code{status.data.recoveryCodesLeft === 1 ? "" : "s"} left.
          </p>
          {status.data.required ? (
            <p class="muted">An administrator requires it for your account, so it cannot be turned off.</p>
          ) : (
            <ActionForm
              submit="Turn off"
              label="Turn off two-step login"
              action={async (f) => {
                await del("/api/v1/account/totp", { code: str(f, "code") });
                setNote("Two-step login is off.");
                status.reload();
              }}
            >
              <p class="field">
                <label for="off-code">Current code or a recovery code</label>
                <input id="off-code" name="code" autocomplete="one-time-code" required />
              </p>
            </ActionForm>
          )}
        </>
      ) : enrol ? (
        <div class="enrol">
          <p>Scan this code with an authenticator app, or type the secret in by hand.</p>
          <img class="qr" src={svgUrl(enrol.qrSvg)} alt={`QR code of ${enrol.otpauthUri}`} width={200} height={200} />
          <p>
            Secret: <code class="secret">{enrol.secret}</code>
          </p>
          <p>Recovery codes (each works once; keep them somewhere safe, they are not shown again):</p>
          <ul class="codes">
            {enrol.recoveryCodes.map((c) => (
              <li key={c}>
                <code>{c}</code>
              </li>
            ))}
          </ul>
          <ActionForm
            submit="Turn on"
            label="Confirm two-step login"
            action={async (f) => {
              await post("/api/v1/account/totp/confirm", { code: str(f, "code") });
              setEnrol(undefined);
              setNote("Two-step login is on: logins now ask for a code.");
              status.reload();
              props.onEnabled?.();
            }}
          >
            <p class="field">
              <label for="confirm-code">Code shown by the app</label>
              <input id="confirm-code" name="code" autocomplete="one-time-code" inputMode="numeric" required />
            </p>
          </ActionForm>
        </div>
      ) : (
        status.data && (
          <>
            <p>
              {status.data.required
                ? "Your administrator requires two-step login for your account: set it up now."
                : "Off. With it on, a password alone does not log you in."}
            </p>
            <button
              type="button"
              onClick={async () => {
                setError(undefined);
                try {
                  setEnrol(await post<Enrolment>("/api/v1/account/totp"));
                } catch (e) {
                  setError(e);
                }
              }}
            >
              Set up two-step login
            </button>
          </>
        )
      )}
    </section>
  );
}

export function LoginTable(props: { records: AuditMatch[] }) {
  return (
    <table>
      <thead>
        <tr>
          <th scope="col">When</th>
          <th scope="col">What</th>
          <th scope="col">Outcome</th>
          <th scope="col">Door</th>
          <th scope="col">Method</th>
          <th scope="col">From</th>
          <th scope="col">Reason</th>
        </tr>
      </thead>
      <tbody>
        {[...props.records].reverse().map(({ seq, record: r }) => (
          <tr key={seq} class={r.outcome === "failure" ? "failure" : undefined}>
            <td class="time">{when(r.time as string)}</td>
            <td>{String(r.action)}</td>
            <td>{String(r.outcome ?? "")}</td>
            <td>{String(r.protocol ?? "")}</td>
            <td>{String(r.method ?? "")}</td>
            <td>{String(r.sourceIp ?? "")}</td>
            <td>{String(r.reason ?? "")}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

interface Token {
  id: string;
  name: string;
  scopes: string[];
  paths: string[];
  createdAt: string;
  expiresAt: string;
  lastUsedAt: string | null;
}

const SCOPES = ["files:read", "files:write", "shares", "account", "admin", "keys", "audit", "metrics"];

function Tokens() {
  const tokens = useLoad(() => get<{ tokens: Token[] }>("/api/v1/tokens"), []);
  const [made, setMade] = useState<string | undefined>(undefined);
  return (
    <section aria-labelledby="tokens-h">
      <h2 id="tokens-h">API tokens</h2>
      <ErrorText error={tokens.error} />
      {made && (
        <p class="field">
          <label for="new-token">New token (shown only now; send it as Authorization: Bearer …)</label>
          <input id="new-token" readOnly value={made} onFocus={(e) => e.currentTarget.select()} />
        </p>
      )}
      {tokens.data && tokens.data.tokens.length > 0 && (
        <ul class="versions">
          {tokens.data.tokens.map((t) => (
            <li key={t.id} class="token">
              <strong>{t.name}</strong> <span class="muted">{t.scopes.join(" ")}</span>{" "}
              {t.paths.join(" ") !== "/" && <span class="muted">on {t.paths.join(" ")}</span>}{" "}
              <span class="muted">
                expires {when(t.expiresAt)}
                {t.lastUsedAt ? `, last used ${when(t.lastUsedAt)}` : ""}
              </span>{" "}
              <button
                type="button"
                class="link"
                aria-label={`Revoke token ${t.name}`}
                onClick={async () => {
                  await del(`/api/v1/tokens/${encodeURIComponent(t.id)}`);
                  tokens.reload();
                }}
              >
                Revoke
              </button>
            </li>
          ))}
        </ul>
      )}
      <ActionForm
        class="filters"
        label="Issue an API token"
        reset
        submit="Issue token"
        action={async (f) => {
          const scopes = SCOPES.filter((sc) => f.get(`scope-${sc}`) === "on");
          const paths = str(f, "paths")
            .split(",")
            .map((p) => p.trim())
            .filter(Boolean);
          const r = await post<{ token: string }>("/api/v1/tokens", {
            name: str(f, "name"),
            scopes,
            ...(paths.length ? { paths } : {}),
            expiresInDays: Number(str(f, "days") || "30"),
          });
          setMade(r.token);
          tokens.reload();
        }}
      >
        <Field label="Token name" name="name" required />
        <fieldset class="scopes">
          <legend>Scopes</legend>
          {SCOPES.map((sc) => (
            <span key={sc} class="check">
              <input id={`scope-${sc}`} name={`scope-${sc}`} type="checkbox" defaultChecked={sc === "files:read"} />
              <label for={`scope-${sc}`}>{sc}</label>
            </span>
          ))}
        </fieldset>
        <Field label="Paths (comma-separated, default /)" name="paths" />
        <Field label="Expires after (days)" name="days" type="number" value="30" />
      </ActionForm>
    </section>
  );
}

interface OwnKeys {
  ssh: { publicKey: string; fingerprint: string }[];
  pgp: {
    fingerprint: string;
    algorithm: string;
    userIds: string[];
    createdAt: string;
    expiresAt: string | null;
    source: string;
  }[];
}

/** Offers `text` as a file download from memory (the private key is never stored anywhere). */
function saveAs(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function passphraseOf(f: FormData): string {
  const p = String(f.get("passphrase") ?? "");
  if (p !== String(f.get("passphrase2") ?? "")) throw new Error("The two passphrases differ.");
  if (p.length < 8) throw new Error("The passphrase needs at least 8 characters.");
  return p;
}

function PassphraseFields(props: { id: string }) {
  return (
    <>
      <p class="field">
        <label for={`${props.id}-p1`}>Passphrase for the private key (8+ characters)</label>
        <input id={`${props.id}-p1`} name="passphrase" type="password" autocomplete="new-password" required />
      </p>
      <p class="field">
        <label for={`${props.id}-p2`}>Passphrase again</label>
        <input id={`${props.id}-p2`} name="passphrase2" type="password" autocomplete="new-password" required />
      </p>
    </>
  );
}

function Keys() {
  const keys = useLoad(() => get<OwnKeys>("/api/v1/account/keys"), []);
  const [note, setNote] = useState("");
  return (
    <section aria-labelledby="keys-h">
      <h2 id="keys-h">Your SSH and OpenPGP keys</h2>
      <p class="muted">
        A key pair made here is generated on the server, its private key handed to you once (protected by your
        passphrase) and not kept; only the public key stays on your account.
      </p>
      <p role="status">{note}</p>
      <ErrorText error={keys.error} />
      {keys.data && (
        <>
          <h3>SSH public keys (logins over SFTP)</h3>
          {keys.data.ssh.length === 0 ? (
            <p class="muted">None.</p>
          ) : (
            <ul class="versions">
              {keys.data.ssh.map((k) => (
                <li key={k.fingerprint} class="token">
                  <code>{k.fingerprint}</code> <span class="muted">{k.publicKey.split(" ").slice(2).join(" ")}</span>{" "}
                  <button
                    type="button"
                    class="link"
                    aria-label={`Remove SSH key ${k.fingerprint}`}
                    onClick={async () => {
                      await del(`/api/v1/account/keys/ssh/${encodeURIComponent(k.fingerprint)}`);
                      setNote(`Removed ${k.fingerprint}.`);
                      keys.reload();
                    }}
                  >
                    Remove
                  </button>
                </li>
              ))}
            </ul>
          )}
          <h3>OpenPGP keys (PGP folders encrypt to them)</h3>
          {keys.data.pgp.length === 0 ? (
            <p class="muted">None.</p>
          ) : (
            <ul class="versions">
              {keys.data.pgp.map((k) => (
                <li key={k.fingerprint} class="token">
                  <code>{k.fingerprint}</code>{" "}
                  <span class="muted">
                    {k.algorithm}, {k.userIds.join(", ")}, {k.source}
                    {k.expiresAt ? `, expires ${when(k.expiresAt)}` : ""}
                  </span>
                </li>
              ))}
            </ul>
          )}
        </>
      )}
      <div class="cards">
        <ActionForm
          class="card"
          label="New SSH key pair"
          reset
          submit="Generate SSH key"
          action={async (f) => {
            const passphrase = passphraseOf(f);
            const r = await post<{ privateKey: string; fingerprint: string }>("/api/v1/account/keys/ssh", {
              passphrase,
              ...(str(f, "comment") ? { comment: str(f, "comment") } : {}),
            });
            saveAs("id_ed25519", r.privateKey);
            setNote(`SSH key ${r.fingerprint} added; its private key was downloaded as id_ed25519 (chmod 600 it).`);
            keys.reload();
          }}
        >
          <h3>New SSH key pair (Ed25519)</h3>
          <PassphraseFields id="ssh" />
          <Field label="Comment (e.g. laptop)" name="comment" />
        </ActionForm>
        <ActionForm
          class="card"
          label="New OpenPGP key pair"
          reset
          submit="Generate OpenPGP key"
          action={async (f) => {
            const passphrase = passphraseOf(f);
            const r = await post<{ privateKey: string; publicKey: string; key: { fingerprint: string } }>(
              "/api/v1/account/keys/pgp",
              {
                passphrase,
                type: str(f, "type") || "ecc",
                ...(str(f, "email") ? { email: str(f, "email") } : {}),
                ...(str(f, "expire") ? { expireDays: Number(str(f, "expire")) } : {}),
              },
            );
            saveAs(`${r.key.fingerprint}-private.asc`, r.privateKey);
            setNote(`OpenPGP key ${r.key.fingerprint} added; its private key was downloaded.`);
            keys.reload();
          }}
        >
          <h3>New OpenPGP key pair</h3>
          <PassphraseFields id="pgp" />
          <Field label="E-mail (optional)" name="email" type="email" />
          <p class="field">
            <label for="pgp-type">Algorithm</label>
            <select id="pgp-type" name="type">
              <option value="ecc">Ed25519 + Cv25519</option>
              <option value="rsa">RSA 3072</option>
            </select>
          </p>
          <Field label="Expires after (days, empty: never)" name="expire" type="number" />
        </ActionForm>
      </div>
    </section>
  );
}

function MyLogins() {
  const logins = useLoad(() => get<{ records: AuditMatch[] }>("/api/v1/account/logins?limit=50"), []);
  return (
    <section aria-labelledby="logins-h">
      <h2 id="logins-h">Your recent logins</h2>
      <ErrorText error={logins.error} />
      {logins.data && <LoginTable records={logins.data.records} />}
    </section>
  );
}

export function Account(props: { session: Session }) {
  const [note, setNote] = useState("");
  return (
    <div class="account">
      <h1>Account: {props.session.user}</h1>
      <Totp />
      {(props.session.role === "user" || props.session.role === "admin") && <Keys />}
      <MyLogins />
      <Tokens />
      <section aria-labelledby="everywhere-h">
        <h2 id="everywhere-h">Sessions</h2>
        <p role="status">{note}</p>
        <button
          type="button"
          onClick={async () => {
            const r = await post<{ ended: number }>("/api/v1/auth/logout-all");
            setNote(`Ended ${r.ended} session(s).`);
            location.reload();
          }}
        >
          Log out everywhere
        </button>
      </section>
    </div>
  );
}
