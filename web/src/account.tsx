// The caller's own account: second factor (TOTP enrolment with a QR code and recovery codes, shown once), their login
// history, and logging out everywhere.
import { useState } from "preact/hooks";
import { del, get, post, type Session } from "./api.ts";
import { when } from "./format.ts";
import { ActionForm, ErrorText, str, useLoad } from "./ui.tsx";

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

function Totp() {
  const status = useLoad(() => get<{ enabled: boolean; recoveryCodesLeft: number }>("/api/v1/account/totp"), []);
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
            <p>Off. With it on, a password alone does not log you in.</p>
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
      <MyLogins />
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
