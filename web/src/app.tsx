// The shell: who is logged in, the sections their role may use (DESIGN §2: admin, custodian, auditor and user each
// see their own work), hash routing (#/files/<path>, #/account, …) so the server serves one page.
import { useEffect, useState } from "preact/hooks";
import { Account, Totp } from "./account.tsx";
import { Admin, type AdminTab } from "./admin.tsx";
import { api, get, type Session, setCsrf, setOnUnauthorized, setSigner } from "./api.ts";
import { Audit, type AuditTab } from "./audit.tsx";
import { Custody, type CustodyTab } from "./custody.tsx";
import { describeStatement, isRead, signStatement } from "./custody-key.ts";
import { Files } from "./files.tsx";
import { Login } from "./login.tsx";
import { Shares } from "./shares.tsx";

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

interface NavItem {
  href: string;
  label: string;
}

function navFor(role: Session["role"]): NavItem[] {
  const files = { href: "#/files", label: "Files" };
  const shares = { href: "#/shares", label: "Shares" };
  const account = { href: "#/account", label: "Account" };
  switch (role) {
    case "admin":
      return [
        files,
        shares,
        { href: "#/admin/users", label: "Users" },
        { href: "#/admin/groups", label: "Groups" },
        { href: "#/admin/folders", label: "Folders" },
        { href: "#/admin/bans", label: "Bans" },
        { href: "#/admin/sessions", label: "Sessions" },
        account,
      ];
    case "custodian":
      return [
        { href: "#/keys", label: "Keys" },
        { href: "#/keys/requests", label: "Requests" },
        { href: "#/keys/jobs", label: "Jobs" },
        { href: "#/keys/who", label: "Who can decrypt" },
        account,
      ];
    case "auditor":
      return [
        { href: "#/audit", label: "Audit" },
        { href: "#/audit/charts", label: "Charts" },
        { href: "#/audit/delivery", label: "SIEM delivery" },
        account,
      ];
    default:
      return [files, shares, account];
  }
}

function home(role: Session["role"]): string {
  return navFor(role)[0].href;
}

function View(props: { session: Session; hash: string }) {
  const { session, hash } = props;
  const route = hash.replace(/^#/, "") || home(session.role).slice(1);
  const role = session.role;
  if (route.startsWith("/files") && (role === "admin" || role === "user")) {
    const rest = route.slice("/files".length);
    const path = rest ? rest.split("/").map(decodeURIComponent).join("/") : "/";
    return <Files path={path || "/"} canShare={true} />;
  }
  if (route === "/account") return <Account session={session} />;
  if (route === "/shares" && (role === "admin" || role === "user")) return <Shares />;
  if (route.startsWith("/admin/") && role === "admin") return <Admin tab={route.slice(7) as AdminTab} />;
  if (route.startsWith("/keys") && role === "custodian") {
    return <Custody tab={(route.slice(6) || "keys") as CustodyTab} user={session.user} />;
  }
  if (route.startsWith("/audit") && role === "auditor") {
    return <Audit tab={(route.slice(7) || "records") as AuditTab} />;
  }
  return (
    <section>
      <h2>Not here</h2>
      <p>
        There is no such page for the {role} role. <a href={home(role)}>Go to the start page.</a>
      </p>
    </section>
  );
}

export function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const hash = useHash();
  useEffect(() => {
    setOnUnauthorized(() => {
      setCsrf(undefined);
      setSession(null);
    });
    get<Session>("/api/v1/auth/session").then(
      (s) => {
        setCsrf(s.csrfToken);
        setSession(s);
      },
      () => setSession(null),
    );
  }, []);
  useEffect(() => {
    // a custodian's calls to a remote key manager are signed by their own key in this browser (custody-key.ts)
    if (session?.role !== "custodian") {
      setSigner(undefined);
      return;
    }
    const user = session.user;
    setSigner(async (statement) => {
      // a read (the request list) is signed without asking; whatever changes something is shown first
      if (
        !isRead(statement) &&
        !confirm(`Sign this call to the key manager as ${user}?\n\n${describeStatement(statement)}`)
      ) {
        throw new Error("not signed: nothing was sent to the key manager");
      }
      return signStatement(user, statement);
    });
  }, [session?.user, session?.role]);
  if (session === undefined) return <p class="loading">Loading…</p>;
  if (session === null) {
    return (
      <Login
        onLogin={(s) => {
          setCsrf(s.csrfToken);
          setSession(s);
        }}
      />
    );
  }
  const logout = async () => {
    await api("POST", "/api/v1/auth/logout", {}).catch(() => {});
    setCsrf(undefined);
    setSession(null);
    location.hash = "";
  };
  if (session.totpEnrolmentRequired) {
    // a session limited to enrolment: nothing else answers until a first code is confirmed
    return (
      <main id="main" class="login">
        <h1>atrest</h1>
        <p>
          Welcome, <strong>{session.user}</strong>. Your account needs two-step login before anything else.
        </p>
        <Totp
          onEnabled={() =>
            get<Session>("/api/v1/auth/session").then((s) => {
              setCsrf(s.csrfToken);
              setSession(s);
            })
          }
        />
        <button type="button" class="link" onClick={logout}>
          Log out
        </button>
      </main>
    );
  }
  const nav = navFor(session.role);
  const current = hash || home(session.role);
  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">atrest</span>
        <nav aria-label="Sections">
          <ul>
            {nav.map((n) => (
              <li key={n.href}>
                <a
                  href={n.href}
                  aria-current={
                    current === n.href || (n.href === "#/files" && current.startsWith("#/files/")) ? "page" : undefined
                  }
                >
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class="who">
          {session.user} <span class="role">({session.role})</span>
        </span>
        <button type="button" onClick={logout}>
          Log out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        <View session={session} hash={hash} />
      </main>
    </>
  );
}
