// Share links: make one for a file or folder (optional password, expiry, download/upload limits, source addresses),
// shown once with a copy button; list your links with their use and revoke them.
import { useState } from "preact/hooks";
import { ApiError, del, get, post } from "./api.ts";
import type { Entry } from "./files.tsx";
import { when } from "./format.ts";
import { DataTable } from "./table.tsx";
import { ActionForm, Dialog, ErrorText, Field, str, useLoad } from "./ui.tsx";

interface Share {
  id: string;
  kind: "file" | "dir";
  path: string | null;
  passwordProtected: boolean;
  expiresAt: string | null;
  allowDownload: boolean;
  allowUpload: boolean;
  maxDownloads: number;
  downloads: number;
  maxUploads: number;
  uploads: number;
  allowFrom: string[];
  createdAt: string;
  lastUsedAt: string | null;
}

const unavailable = (e: unknown) =>
  e instanceof ApiError && e.status === 404 && /no route/.test(e.message)
    ? new Error("Share links are not available on this server.")
    : e;

const num = (f: FormData, k: string) => {
  const v = str(f, k);
  return v ? Number(v) : undefined;
};

export function ShareDialog(props: { entry: Entry; onClose: () => void }) {
  const { entry } = props;
  const [made, setMade] = useState<string | undefined>(undefined);
  const [copied, setCopied] = useState(false);
  return (
    <Dialog title={`Share ${entry.name}`} onClose={props.onClose}>
      {made ? (
        <>
          <p>Anyone with this link can open it{copied ? "" : " (it is shown only now)"}:</p>
          <p class="field">
            <label for="share-url">Share link</label>
            <input id="share-url" readOnly value={made} onFocus={(e) => e.currentTarget.select()} />
          </p>
          <p class="row-actions">
            <button
              type="button"
              onClick={async () => {
                await navigator.clipboard?.writeText(made).catch(() => {});
                setCopied(true);
              }}
            >
              {copied ? "Copied" : "Copy link"}
            </button>
            <button type="button" class="link" onClick={props.onClose}>
              Close
            </button>
          </p>
        </>
      ) : (
        <ActionForm
          submit="Create link"
          label="Create a share link"
          action={async (f) => {
            const body: Record<string, unknown> = { path: entry.path };
            if (str(f, "password")) body.password = str(f, "password");
            const days = num(f, "days");
            if (days) body.expiresInDays = days;
            const maxDownloads = num(f, "maxDownloads");
            if (maxDownloads) body.maxDownloads = maxDownloads;
            if (entry.kind === "dir" && f.get("allowUpload") === "on") {
              body.allowUpload = true;
              const maxUploads = num(f, "maxUploads");
              if (maxUploads) body.maxUploads = maxUploads;
            }
            const from = str(f, "allowFrom");
            if (from)
              body.allowFrom = from
                .split(",")
                .map((s) => s.trim())
                .filter(Boolean);
            try {
              const r = await post<{ url: string }>("/api/v1/shares", body);
              setMade(new URL(r.url, location.origin).href);
            } catch (e) {
              throw unavailable(e);
            }
          }}
        >
          <Field label="Password (optional)" name="password" type="password" autocomplete="new-password" />
          <Field label="Expires after (days, empty: never)" name="days" type="number" />
          <Field label="Downloads allowed (empty: unlimited)" name="maxDownloads" type="number" />
          {entry.kind === "dir" && (
            <>
              <p class="check">
                <input id="allowUpload" name="allowUpload" type="checkbox" />
                <label for="allowUpload">Others may upload into this folder</label>
              </p>
              <Field label="Uploads allowed (empty: unlimited)" name="maxUploads" type="number" />
            </>
          )}
          <Field label="Only from these addresses (IPs or CIDRs, comma-separated)" name="allowFrom" />
        </ActionForm>
      )}
    </Dialog>
  );
}

export function Shares() {
  const shares = useLoad(() => get<{ shares: Share[] }>("/api/v1/shares"), []);
  const limit = (used: number, max: number) => (max ? `${used} of ${max}` : String(used));
  return (
    <>
      <h1>Your share links</h1>
      <p class="muted">Make a link from the actions of a file or folder. The link itself is shown only when made.</p>
      <ErrorText error={shares.error && unavailable(shares.error)} />
      <DataTable
        caption="Share links"
        rows={shares.data?.shares}
        rowKey={(s) => s.id}
        empty="No share links."
        columns={[
          { label: "Shares", cell: (s) => s.path ?? "(gone)" },
          {
            label: "Protection",
            cell: (s) =>
              [
                s.passwordProtected ? "password" : "",
                s.allowFrom.length ? `from ${s.allowFrom.join(", ")}` : "",
                s.allowUpload ? "uploads allowed" : "",
              ]
                .filter(Boolean)
                .join(", ") || "none",
          },
          { label: "Downloads", cell: (s) => limit(s.downloads, s.maxDownloads), class: "num" },
          { label: "Uploads", cell: (s) => (s.allowUpload ? limit(s.uploads, s.maxUploads) : ""), class: "num" },
          { label: "Expires", cell: (s) => (s.expiresAt ? when(s.expiresAt) : "never"), class: "time" },
          { label: "Last used", cell: (s) => (s.lastUsedAt ? when(s.lastUsedAt) : ""), class: "time" },
          {
            label: "",
            cell: (s) => (
              <button
                type="button"
                class="danger"
                aria-label={`Revoke the link to ${s.path ?? s.id}`}
                onClick={async () => {
                  await del(`/api/v1/shares/${encodeURIComponent(s.id)}`);
                  shares.reload();
                }}
              >
                Revoke
              </button>
            ),
          },
        ]}
      />
    </>
  );
}
