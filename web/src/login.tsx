// Log in: user name and password; when the server answers SECOND_FACTOR_REQUIRED, a second step asks for the TOTP
// code (or a recovery code) and sends all three again.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, type Session } from "./api.ts";
import { ErrorText } from "./ui.tsx";

export function Login(props: { onLogin: (s: Session) => void }) {
  const [needCode, setNeedCode] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  const [creds, setCreds] = useState({ username: "", password: "" });
  const [oidc, setOidc] = useState<{ enabled: boolean; label?: string; loginUrl?: string } | undefined>(undefined);
  useEffect(() => {
    api<{ enabled: boolean; label?: string; loginUrl?: string }>("GET", "/api/v1/auth/oidc", undefined, true).then(
      setOidc,
      () => setOidc(undefined),
    );
  }, []);

  const submit = async (e: Event) => {
    e.preventDefault();
    const f = new FormData(e.currentTarget as HTMLFormElement);
    const username = needCode ? creds.username : String(f.get("username") ?? "");
    const password = needCode ? creds.password : String(f.get("password") ?? "");
    const totp = needCode ? String(f.get("totp") ?? "").replace(/\s+/g, "") : undefined;
    setBusy(true);
    setError(undefined);
    try {
      const s = await api<Session>("POST", "/api/v1/auth/login", { username, password, totp }, true);
      setCreds({ username: "", password: "" });
      props.onLogin(s);
    } catch (err) {
      if (err instanceof ApiError && err.code === "SECOND_FACTOR_REQUIRED") {
        if (needCode) setError(new Error("That code was not accepted. Try the next one from your app."));
        setCreds({ username, password });
        setNeedCode(true);
      } else if (err instanceof ApiError && err.status === 401) {
        setError(new Error(needCode ? "That code was not accepted." : "Wrong user name or password."));
      } else setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="login">
      <h1>atrest</h1>
      <form onSubmit={submit} aria-label="Log in">
        {needCode ? (
          <>
            <p>
              Enter the 6-digit code from your authenticator app for <strong>{creds.username}</strong>, or one of your
              recovery codes.
            </p>
            <p class="field">
              <label for="totp">Authentication code</label>
              <input id="totp" name="totp" autocomplete="one-time-code" inputMode="numeric" required autofocus />
            </p>
          </>
        ) : (
          <>
            <p class="field">
              <label for="username">User name</label>
              <input id="username" name="username" autocomplete="username" required autofocus />
            </p>
            <p class="field">
              <label for="password">Password</label>
              <input id="password" name="password" type="password" autocomplete="current-password" required />
            </p>
          </>
        )}
        <button type="submit" disabled={busy}>
          {needCode ? "Verify" : "Log in"}
        </button>
        {needCode && (
          <button
            type="button"
            class="link"
            onClick={() => {
              setNeedCode(false);
              setError(undefined);
            }}
          >
            Back
          </button>
        )}
        <ErrorText error={error} />
      </form>
      {oidc?.enabled && oidc.loginUrl && !needCode && (
        <p class="sso">
          <span class="muted">or</span>{" "}
          <a class="button" href={`${oidc.loginUrl}?next=${encodeURIComponent(location.pathname + location.hash)}`}>
            Log in with {oidc.label ?? "single sign-on"}
          </a>
        </p>
      )}
    </main>
  );
}
