// Administration (role admin): users (added, changed, disabled, their sessions ended), groups, folders with their
// encryption policy (the KEK files under them are wrapped with), the defender's bans, the live sessions of every door.
import { useState } from "preact/hooks";
import { del, get, patch, post, put } from "./api.ts";
import { bytes, when } from "./format.ts";
import { type Column, DataTable } from "./table.tsx";
import { ActionForm, Dialog, ErrorText, Field, str, useLoad } from "./ui.tsx";

export type AdminTab = "users" | "groups" | "folders" | "bans" | "sessions";

interface User {
  name: string;
  role: string;
  home: string;
  groups: string[];
  publicKeys: string[];
  hasPassword: boolean;
  kek: string | null;
  requireTotp?: boolean;
  disabled?: boolean;
  permissions: Record<string, string[]>;
  quotaBytes: number;
  quotaFiles: number;
  usedBytes: number;
  usedFiles: number;
  createdAt: string;
}
interface Group {
  name: string;
  options: { key?: string; requireTotp?: boolean };
  createdAt: string;
}
interface Folder {
  path: string;
  options: Record<string, unknown>;
  createdAt: string;
}
interface Ban {
  kind: "ip" | "user";
  subject: string;
  since: string;
  until: string;
  count: number;
  active: boolean;
}
interface LiveSession {
  sessionId: string;
  user: string;
  protocol: string;
  sourceIp?: string;
  since: string;
  /** Several nodes on one store: the node an SFTP/S3 connection is on. */
  node?: string;
}

const list = (s: string) =>
  s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean);

/** A button that asks before running `run`. */
function Confirm(props: { label: string; question: string; run: () => Promise<void>; danger?: boolean }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <button type="button" class={props.danger ? "danger" : undefined} onClick={() => setOpen(true)}>
        {props.label}
      </button>
      {open && (
        <Dialog title={props.question} onClose={() => setOpen(false)}>
          <ActionForm
            submit={props.label}
            class={props.danger ? "danger" : undefined}
            action={async () => {
              await props.run();
              setOpen(false);
            }}
          />
        </Dialog>
      )}
    </>
  );
}

/** `/path: list,download` per line ⇄ the API's permission map. */
const permText = (p: Record<string, string[]>) =>
  Object.entries(p)
    .map(([k, v]) => `${k}: ${v.join(",")}`)
    .join("\n");
function permMap(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const line of text.split("\n").map((l) => l.trim())) {
    if (!line) continue;
    const at = line.lastIndexOf(":");
    if (at <= 0) throw new Error(`permissions: "${line}" is not "/path: perm,perm"`);
    out[line.slice(0, at).trim()] = list(line.slice(at + 1));
  }
  return out;
}

function UserField(props: { label: string; name: string; value: string; inputmode?: string }) {
  const id = `u-${props.name}`;
  return (
    <p class="field">
      <label for={id}>{props.label}</label>
      <input id={id} name={props.name} defaultValue={props.value} inputMode={props.inputmode as "numeric"} />
    </p>
  );
}

/** Changes a user: only the fields that differ from what the user has are sent (a new home or permissions end the
 * user's SFTP and S3 connections, so an unchanged one must not be sent). */
function EditUser(props: { user: User; onDone: () => void }) {
  const u = props.user;
  return (
    <Dialog title={`Change ${u.name}`} onClose={props.onDone}>
      <ActionForm
        label={`Change ${u.name}`}
        submit="Save changes"
        action={async (f) => {
          const body: Record<string, unknown> = {};
          const home = str(f, "home");
          if (home !== u.home) body.home = home;
          const groups = list(str(f, "groups"));
          if (groups.join(",") !== u.groups.join(",")) body.groups = groups;
          for (const q of ["quotaBytes", "quotaFiles"] as const) {
            const n = Number(str(f, q) || "0");
            if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${q}: a whole number, 0 = unlimited`);
            if (n !== u[q]) body[q] = n;
          }
          const perms = permMap(String(f.get("permissions") ?? ""));
          if (JSON.stringify(perms) !== JSON.stringify(u.permissions)) body.permissions = perms;
          const totp = f.get("requireTotp") === "on";
          if (totp !== (u.requireTotp === true)) body.requireTotp = totp;
          const disabled = f.get("disabled") === "on";
          if (disabled !== (u.disabled === true)) body.disabled = disabled;
          if (Object.keys(body).length > 0) await patch(`/api/v1/admin/users/${encodeURIComponent(u.name)}`, body);
          props.onDone();
        }}
      >
        <UserField label="Home" name="home" value={u.home} />
        <UserField label="Groups (comma-separated)" name="groups" value={u.groups.join(", ")} />
        <UserField
          label="Quota, bytes (0: unlimited)"
          name="quotaBytes"
          value={String(u.quotaBytes)}
          inputmode="numeric"
        />
        <UserField
          label="Quota, files (0: unlimited)"
          name="quotaFiles"
          value={String(u.quotaFiles)}
          inputmode="numeric"
        />
        <p class="field">
          <label for="u-permissions">Permissions (one "/path: perm,perm" per line)</label>
          <textarea id="u-permissions" name="permissions" rows={3} defaultValue={permText(u.permissions)} />
        </p>
        <p class="check">
          <input id="u-requireTotp" name="requireTotp" type="checkbox" defaultChecked={u.requireTotp === true} />
          <label for="u-requireTotp">Require TOTP</label>
        </p>
        <p class="check">
          <input id="u-disabled" name="disabled" type="checkbox" defaultChecked={u.disabled === true} />
          <label for="u-disabled">Disabled (no login by any door; live connections end)</label>
        </p>
      </ActionForm>
    </Dialog>
  );
}

/** Ends every live connection of `user` (browser, SFTP, S3), then runs `done`. */
function EndSessions(props: { user: string; done: () => void }) {
  return (
    <Confirm
      label="End sessions"
      question={`End every session of ${props.user} (browser, SFTP, S3)?`}
      run={async () => {
        await del(`/api/v1/admin/users/${encodeURIComponent(props.user)}/sessions`);
        props.done();
      }}
    />
  );
}

function Users() {
  const [editing, setEditing] = useState<User | undefined>(undefined);
  const users = useLoad(() => get<{ users: User[] }>("/api/v1/admin/users"), []);
  const cols: Column<User>[] = [
    { label: "Name", cell: (u) => u.name },
    { label: "Role", cell: (u) => u.role },
    { label: "Home", cell: (u) => u.home },
    { label: "Groups", cell: (u) => u.groups.join(", ") },
    {
      label: "Login",
      cell: (u) =>
        [u.hasPassword ? "password" : "", u.publicKeys.length ? `${u.publicKeys.length} key(s)` : ""]
          .filter(Boolean)
          .join(", "),
    },
    { label: "Key", cell: (u) => u.kek ?? "" },
    {
      label: "TOTP",
      cell: (u) => (
        <button
          type="button"
          class="link"
          aria-label={`${u.requireTotp ? "Stop requiring" : "Require"} TOTP for ${u.name}`}
          onClick={async () => {
            await put(`/api/v1/admin/users/${encodeURIComponent(u.name)}/require-totp`, { required: !u.requireTotp });
            users.reload();
          }}
        >
          {u.requireTotp ? "required" : "optional"}
        </button>
      ),
    },
    {
      label: "Used",
      class: "num",
      cell: (u) => `${bytes(u.usedBytes)}${u.quotaBytes ? ` of ${bytes(u.quotaBytes)}` : ""}, ${u.usedFiles} files`,
    },
    { label: "State", cell: (u) => (u.disabled ? "disabled" : "enabled") },
    { label: "Created", cell: (u) => when(u.createdAt), class: "time" },
    {
      label: "",
      cell: (u) => (
        <span class="row-actions">
          <button type="button" aria-label={`Change ${u.name}`} onClick={() => setEditing(u)}>
            Change…
          </button>
          <EndSessions user={u.name} done={users.reload} />
          <Confirm
            label="Remove"
            danger
            question={`Remove user ${u.name}? Their files stay.`}
            run={async () => {
              await del(`/api/v1/admin/users/${encodeURIComponent(u.name)}`);
              users.reload();
            }}
          />
        </span>
      ),
    },
  ];
  return (
    <>
      <h1>Users</h1>
      <ErrorText error={users.error} />
      <DataTable caption="Users" columns={cols} rows={users.data?.users} rowKey={(u) => u.name} />
      {editing && (
        <EditUser
          user={editing}
          onDone={() => {
            setEditing(undefined);
            users.reload();
          }}
        />
      )}
      <h2>Add a user</h2>
      <ActionForm
        class="filters"
        label="Add a user"
        reset
        submit="Add user"
        action={async (f) => {
          const body: Record<string, unknown> = { name: str(f, "name"), role: str(f, "role") };
          if (str(f, "password")) body.password = str(f, "password");
          if (str(f, "groups")) body.groups = list(str(f, "groups"));
          if (str(f, "home")) body.home = str(f, "home");
          if (str(f, "kek")) body.kek = str(f, "kek");
          if (str(f, "publicKey")) body.publicKeys = [str(f, "publicKey")];
          if (f.get("requireTotp") === "on") body.requireTotp = true;
          await post("/api/v1/admin/users", body);
          users.reload();
        }}
      >
        <Field label="Name" name="name" required />
        <Field label="Password (8+ characters)" name="password" type="password" autocomplete="new-password" />
        <p class="field">
          <label for="f-role">Role</label>
          <select id="f-role" name="role">
            <option value="user">user</option>
            <option value="admin">admin</option>
            <option value="custodian">custodian</option>
            <option value="auditor">auditor</option>
          </select>
        </p>
        <Field label="Groups (comma-separated)" name="groups" />
        <Field label="Home (default /<name>)" name="home" />
        <Field label="Key (KEK name)" name="kek" />
        <Field label="SSH public key" name="publicKey" />
        <p class="check">
          <input id="f-requireTotp" name="requireTotp" type="checkbox" />
          <label for="f-requireTotp">Require TOTP (set up at the first login)</label>
        </p>
      </ActionForm>
    </>
  );
}

function Groups() {
  const groups = useLoad(() => get<{ groups: Group[] }>("/api/v1/admin/groups"), []);
  return (
    <>
      <h1>Groups</h1>
      <ErrorText error={groups.error} />
      <DataTable
        caption="Groups"
        rows={groups.data?.groups}
        rowKey={(g) => g.name}
        columns={[
          { label: "Name", cell: (g) => g.name },
          { label: "Key for members' files", cell: (g) => g.options.key ?? "(default)" },
          { label: "Members need TOTP", cell: (g) => (g.options.requireTotp ? "yes" : "no") },
          { label: "Created", cell: (g) => when(g.createdAt), class: "time" },
          {
            label: "",
            cell: (g) => (
              <Confirm
                label="Remove"
                danger
                question={`Remove group ${g.name}?`}
                run={async () => {
                  await del(`/api/v1/admin/groups/${encodeURIComponent(g.name)}`);
                  groups.reload();
                }}
              />
            ),
          },
        ]}
      />
      <h2>Create a group or change its key</h2>
      <ActionForm
        class="filters"
        label="Create a group"
        submit="Save group"
        action={async (f) => {
          const body: Record<string, unknown> = str(f, "key") ? { key: str(f, "key") } : {};
          if (f.get("requireTotp") === "on") body.requireTotp = true;
          await put(`/api/v1/admin/groups/${encodeURIComponent(str(f, "name"))}`, body);
          groups.reload();
        }}
      >
        <Field label="Group name" name="name" required />
        <Field label="Key (KEK name, empty: default)" name="key" />
        <p class="check">
          <input id="g-requireTotp" name="requireTotp" type="checkbox" />
          <label for="g-requireTotp">Members need TOTP</label>
        </p>
      </ActionForm>
    </>
  );
}

function Folders() {
  const folders = useLoad(() => get<{ folders: Folder[] }>("/api/v1/admin/folders"), []);
  return (
    <>
      <h1>Folders and their encryption policy</h1>
      <p class="muted">Files written under a folder are wrapped with its key (a KEK held by the key manager).</p>
      <ErrorText error={folders.error} />
      <DataTable
        caption="Folders"
        rows={folders.data?.folders}
        rowKey={(f) => f.path}
        columns={[
          { label: "Path", cell: (f) => f.path },
          { label: "Key", cell: (f) => String(f.options.key ?? "(default)") },
          {
            label: "Other policy",
            cell: (f) =>
              Object.entries(f.options)
                .filter(([k]) => k !== "key")
                .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
                .join("; "),
          },
          { label: "Created", cell: (f) => when(f.createdAt), class: "time" },
          {
            label: "",
            cell: (f) => (
              <Confirm
                label="Remove"
                danger
                question={`Remove the rule for ${f.path}? The directory and files stay.`}
                run={async () => {
                  await del(`/api/v1/admin/folders?path=${encodeURIComponent(f.path)}`);
                  folders.reload();
                }}
              />
            ),
          },
        ]}
      />
      <h2>Set a folder's key</h2>
      <ActionForm
        class="filters"
        label="Set a folder's key"
        submit="Save folder"
        action={async (f) => {
          await put("/api/v1/admin/folders", {
            path: str(f, "path"),
            ...(str(f, "key") ? { key: str(f, "key") } : {}),
          });
          folders.reload();
        }}
      >
        <Field label="Folder path (global)" name="path" required placeholder="/finance" />
        <Field label="Key (KEK name)" name="key" />
      </ActionForm>
    </>
  );
}

function Bans() {
  const bans = useLoad(() => get<{ bans: Ban[] }>("/api/v1/admin/bans"), []);
  return (
    <>
      <h1>Defender bans</h1>
      <p class="muted">Addresses and user names banned after repeated failed logins, on every door.</p>
      <ErrorText error={bans.error} />
      <DataTable
        caption="Bans"
        rows={bans.data?.bans}
        rowKey={(b) => `${b.kind}:${b.subject}:${b.since}`}
        empty="No bans."
        rowClass={(b) => (b.active ? "failure" : undefined)}
        columns={[
          { label: "Kind", cell: (b) => b.kind },
          { label: "Subject", cell: (b) => b.subject },
          { label: "Since", cell: (b) => when(b.since), class: "time" },
          { label: "Until", cell: (b) => when(b.until), class: "time" },
          { label: "Count", cell: (b) => b.count, class: "num" },
          { label: "State", cell: (b) => (b.active ? "active" : "ended") },
          {
            label: "",
            cell: (b) =>
              b.active && (
                <Confirm
                  label="Lift"
                  question={`Lift the ban on ${b.subject}?`}
                  run={async () => {
                    await del(`/api/v1/admin/bans/${encodeURIComponent(b.subject)}`);
                    bans.reload();
                  }}
                />
              ),
          },
        ]}
      />
    </>
  );
}

function Sessions() {
  const s = useLoad(() => get<{ sessions: LiveSession[] }>("/api/v1/admin/sessions"), []);
  return (
    <>
      <h1>Live sessions</h1>
      <ErrorText error={s.error} />
      <button type="button" onClick={s.reload}>
        Refresh
      </button>
      <DataTable
        caption="Live sessions"
        rows={s.data?.sessions}
        rowKey={(x) => x.sessionId}
        empty="Nobody is connected."
        columns={[
          { label: "User", cell: (x) => x.user },
          { label: "Door", cell: (x) => x.protocol },
          ...(s.data?.sessions.some((x) => x.node)
            ? [{ label: "Node", cell: (x: LiveSession) => x.node ?? (x.protocol === "http" ? "any" : "") }]
            : []),
          { label: "From", cell: (x) => x.sourceIp ?? "" },
          { label: "Since", cell: (x) => when(x.since), class: "time" },
          { label: "Session", cell: (x) => <code>{x.sessionId.slice(0, 8)}</code> },
          { label: "", cell: (x) => <EndSessions user={x.user} done={s.reload} /> },
        ]}
      />
    </>
  );
}

export function Admin(props: { tab: AdminTab }) {
  switch (props.tab) {
    case "users":
      return <Users />;
    case "groups":
      return <Groups />;
    case "folders":
      return <Folders />;
    case "bans":
      return <Bans />;
    case "sessions":
      return <Sessions />;
    default:
      return <p>No such page.</p>;
  }
}
