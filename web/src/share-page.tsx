// The page a share link opens (/s/<link>), for someone without an account: what is shared and by whom, a password
// prompt when the link has one (checked once, then remembered by an HttpOnly cookie), the file's download, or the
// folder's listing with downloads, a zip, and uploads when the link takes them.
import { useState } from "preact/hooks";
import { ApiError, api, qs } from "./api.ts";
import { bytes, joinPath, parentOf, when } from "./format.ts";
import { ErrorText, useLoad } from "./ui.tsx";

interface PublicShare {
  id: string;
  kind: "file" | "dir";
  name: string;
  size?: number;
  owner: string;
  expiresAt: string | null;
  allowDownload: boolean;
  allowUpload: boolean;
  downloadsLeft: number | null;
  uploadsLeft: number | null;
}
interface Entry {
  path: string;
  name: string;
  kind: "file" | "dir";
  size: number;
  mtime: string;
}

function Unlock(props: { base: string; onOpen: () => void }) {
  const [error, setError] = useState<unknown>(undefined);
  return (
    <form
      aria-label="Share password"
      onSubmit={async (e) => {
        e.preventDefault();
        const f = new FormData(e.currentTarget as HTMLFormElement);
        setError(undefined);
        try {
          await api("POST", `${props.base}/unlock`, { password: String(f.get("password") ?? "") }, true);
          props.onOpen();
        } catch (err) {
          setError(err instanceof ApiError && err.status === 401 ? new Error("Wrong password.") : err);
        }
      }}
    >
      <p>This link is protected by a password.</p>
      <p class="field">
        <label for="share-pw">Password</label>
        <input id="share-pw" name="password" type="password" autocomplete="current-password" required autofocus />
      </p>
      <button type="submit">Open</button>
      <ErrorText error={error} />
    </form>
  );
}

function Upload(props: { base: string; dir: string; onDone: () => void }) {
  const [items, setItems] = useState<{ name: string; sent: number; size: number; error?: string }[]>([]);
  const send = (files: File[]) => {
    const start = items.length;
    setItems((xs) => [...xs, ...files.map((f) => ({ name: f.name, sent: 0, size: f.size }))]);
    files.forEach((file, k) => {
      const i = start + k;
      const xhr = new XMLHttpRequest();
      const path = joinPath(props.dir, file.name);
      xhr.open("PUT", `${props.base}/files${path.split("/").map(encodeURIComponent).join("/")}`);
      xhr.setRequestHeader("content-type", "application/octet-stream");
      const set = (patch: Partial<{ sent: number; error: string }>) =>
        setItems((xs) => xs.map((x, j) => (j === i ? { ...x, ...patch } : x)));
      xhr.upload.onprogress = (e) => set({ sent: e.loaded });
      xhr.onload = () => {
        if (xhr.status === 201) {
          set({ sent: file.size });
          props.onDone();
        } else {
          let detail = `HTTP ${xhr.status}`;
          try {
            detail = (JSON.parse(xhr.responseText) as { detail?: string }).detail ?? detail;
          } catch {}
          set({ error: detail });
        }
      };
      xhr.onerror = () => set({ error: "network error" });
      xhr.send(file);
    });
  };
  return (
    <section aria-label="Upload into this folder">
      <p class="field">
        <label for="share-up">Upload files into this folder</label>
        <input
          id="share-up"
          type="file"
          multiple
          onChange={(e) => {
            const files = [...(e.currentTarget.files ?? [])];
            e.currentTarget.value = "";
            if (files.length) send(files);
          }}
        />
      </p>
      <ul class="versions">
        {items.map((x, i) => (
          <li key={`${x.name}-${i}`} class="upload">
            <label for={`sup-${i}`}>
              {x.name}{" "}
              <span class="state">{x.error ? `failed: ${x.error}` : `${bytes(x.sent)} / ${bytes(x.size)}`}</span>
            </label>
            <progress id={`sup-${i}`} max={x.size || 1} value={x.size ? x.sent : 1} />
          </li>
        ))}
      </ul>
    </section>
  );
}

function Listing(props: { base: string; share: PublicShare }) {
  const [dir, setDir] = useState("/");
  const list = useLoad(
    () => api<{ entries: Entry[] }>("GET", `${props.base}/list${qs({ path: dir, limit: 5000 })}`, undefined, true),
    [dir],
  );
  const parts = dir.split("/").filter(Boolean);
  return (
    <>
      <nav aria-label="Breadcrumbs" class="crumbs">
        <ol>
          <li>
            <button type="button" class="link" onClick={() => setDir("/")}>
              {props.share.name}
            </button>
          </li>
          {parts.map((p, i) => (
            <li key={p}>
              <button type="button" class="link" onClick={() => setDir(`/${parts.slice(0, i + 1).join("/")}`)}>
                {p}
              </button>
            </li>
          ))}
        </ol>
      </nav>
      {props.share.allowDownload && (
        <p>
          <a class="button" href={`${props.base}/zip${qs({ path: dir })}`} download>
            Download this folder as zip
          </a>
        </p>
      )}
      <ErrorText error={list.error} />
      <table class="listing">
        <caption class="sr-only">Contents of the shared folder {dir}</caption>
        <thead>
          <tr>
            <th scope="col">Name</th>
            <th scope="col">Size</th>
            <th scope="col">Modified</th>
          </tr>
        </thead>
        <tbody>
          {dir !== "/" && (
            <tr>
              <td colSpan={3}>
                <button type="button" class="link" onClick={() => setDir(parentOf(dir))}>
                  .. (up)
                </button>
              </td>
            </tr>
          )}
          {(list.data?.entries ?? []).map((e) => (
            <tr key={e.path} data-name={e.name}>
              <td class="name">
                {e.kind === "dir" ? (
                  <button type="button" class="link" onClick={() => setDir(e.path)}>
                    {e.name}/
                  </button>
                ) : (
                  <a href={`${props.base}/download${qs({ path: e.path })}`} download={e.name}>
                    {e.name}
                  </a>
                )}
              </td>
              <td class="num">{e.kind === "dir" ? "" : bytes(e.size)}</td>
              <td class="time">{when(e.mtime)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {props.share.allowUpload && <Upload base={props.base} dir={dir} onDone={list.reload} />}
    </>
  );
}

export function SharePage(props: { link: string }) {
  const base = `/api/v1/s/${encodeURIComponent(props.link)}`;
  const share = useLoad(() => api<PublicShare>("GET", base, undefined, true), []);
  const locked = share.error instanceof ApiError && share.error.code === "SHARE_PASSWORD_REQUIRED";
  const s = share.data;
  return (
    <>
      <header class="top">
        <span class="brand">atrest</span> <span class="muted">shared link</span>
      </header>
      <main class="share">
        <h1>{s ? s.name : "Shared with you"}</h1>
        {locked ? (
          <Unlock base={base} onOpen={share.reload} />
        ) : share.error ? (
          <ErrorText error={share.error} />
        ) : (
          s && (
            <>
              <p class="muted">
                Shared by {s.owner}
                {s.expiresAt ? `, until ${when(s.expiresAt)}` : ""}
                {s.downloadsLeft !== null ? `, ${s.downloadsLeft} download(s) left` : ""}
              </p>
              {s.kind === "file" ? (
                s.allowDownload ? (
                  <p>
                    <a class="button" href={`${base}/download`} download={s.name}>
                      Download {s.name}
                    </a>{" "}
                    {s.size !== undefined && <span class="muted">({bytes(s.size)})</span>}
                  </p>
                ) : (
                  <p>This link takes no downloads.</p>
                )
              ) : (
                <Listing base={base} share={s} />
              )}
            </>
          )
        )}
      </main>
    </>
  );
}
