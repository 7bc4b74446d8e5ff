// The file browser: breadcrumbs, a sortable listing filtered by a search box, drag-and-drop (or picked) upload of
// files and folders through tus with per-file and total progress and pause/resume, and per-entry download, rename,
// move, copy, delete and share.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { del, fileUrl, get, post, qs } from "./api.ts";
import { bytes, joinPath, parentOf, when } from "./format.ts";
import { ShareDialog } from "./shares.tsx";
import { pause, run, type UploadItem } from "./tus.ts";
import { ActionForm, Dialog, ErrorText, str, useLoad } from "./ui.tsx";

export interface Entry {
  path: string;
  name: string;
  kind: "file" | "dir";
  size: number;
  mtime: string;
  etag?: string;
}

type SortKey = "name" | "size" | "mtime";

async function listAll(path: string): Promise<Entry[]> {
  const out: Entry[] = [];
  let cursor: string | undefined;
  do {
    const page = await get<{ entries: Entry[]; nextCursor: string | null }>(
      `/api/v1/fs/list${qs({ path, limit: 5000, cursor, order: "store" })}`,
    );
    out.push(...page.entries);
    cursor = page.nextCursor ?? undefined;
  } while (cursor && out.length < 100_000);
  return out;
}

export const filesHash = (path: string) =>
  `#/files${path === "/" ? "" : path.split("/").map(encodeURIComponent).join("/")}`;

function Breadcrumbs(props: { path: string }) {
  const parts = props.path.split("/").filter(Boolean);
  return (
    <nav aria-label="Breadcrumbs" class="crumbs">
      <ol>
        <li>
          <a href={filesHash("/")} aria-current={parts.length === 0 ? "page" : undefined}>
            Home
          </a>
        </li>
        {parts.map((p, i) => {
          const to = `/${parts.slice(0, i + 1).join("/")}`;
          return (
            <li key={to}>
              <a href={filesHash(to)} aria-current={i === parts.length - 1 ? "page" : undefined}>
                {p}
              </a>
            </li>
          );
        })}
      </ol>
    </nav>
  );
}

function FolderIcon() {
  return (
    <svg class="icon" width="16" height="14" viewBox="0 0 16 14" aria-hidden="true">
      <path d="M1 2.5A1.5 1.5 0 0 1 2.5 1h3.6l1.6 1.8h5.8A1.5 1.5 0 0 1 15 4.3v7.2a1.5 1.5 0 0 1-1.5 1.5h-11A1.5 1.5 0 0 1 1 11.5z" />
    </svg>
  );
}

// ---- uploads ----

let nextId = 1;
/** Rows rendered at once (a 10,000-entry folder is listed in full, shown a step at a time). */
const ROWS_STEP = 500;
const PARALLEL = 3;

interface Picked {
  file: File;
  rel: string;
}

async function readEntry(entry: FileSystemEntry, prefix: string, out: Picked[]): Promise<void> {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
    out.push({ file, rel: `${prefix}${entry.name}` });
  } else if (entry.isDirectory) {
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
      if (batch.length === 0) break;
      for (const e of batch) await readEntry(e, `${prefix}${entry.name}/`, out);
    }
  }
}

async function droppedFiles(dt: DataTransfer): Promise<Picked[]> {
  const out: Picked[] = [];
  const entries = [...dt.items]
    .filter((i) => i.kind === "file")
    .map((i) => i.webkitGetAsEntry?.())
    .filter((e): e is FileSystemEntry => !!e);
  if (entries.length > 0) {
    for (const e of entries) await readEntry(e, "", out);
    return out;
  }
  for (const f of dt.files) out.push({ file: f, rel: f.name });
  return out;
}

function useUploads(onDone: () => void) {
  const [items, setItems] = useState<UploadItem[]>([]);
  const list = useRef<UploadItem[]>([]);
  const [, force] = useState(0);
  const changed = () => force((n) => n + 1);
  const pump = () => {
    const active = list.current.filter((i) => i.state === "uploading").length;
    const next = list.current.filter((i) => i.state === "queued").slice(0, Math.max(0, PARALLEL - active));
    for (const item of next) {
      void run(item, changed).then(() => {
        if (item.state === "done") onDone();
        pump();
      });
    }
  };
  const add = (dir: string, picked: Picked[]) => {
    const fresh = picked.map(
      (p): UploadItem => ({ id: nextId++, file: p.file, path: joinPath(dir, p.rel), sent: 0, state: "queued" }),
    );
    list.current = [...list.current, ...fresh];
    setItems(list.current);
    pump();
  };
  const pauseOne = (i: UploadItem) => {
    pause(i);
    changed();
    pump();
  };
  const resumeOne = (i: UploadItem) => {
    if (i.state === "paused" || i.state === "error") i.state = "queued";
    changed();
    pump();
  };
  const clearDone = () => {
    list.current = list.current.filter((i) => i.state !== "done");
    setItems(list.current);
  };
  return { items, add, pauseOne, resumeOne, clearDone };
}

function Uploads(props: { up: ReturnType<typeof useUploads> }) {
  const { items, pauseOne, resumeOne, clearDone } = props.up;
  if (items.length === 0) return null;
  const total = items.reduce((a, i) => a + i.file.size, 0);
  const sent = items.reduce((a, i) => a + Math.min(i.sent, i.file.size), 0);
  const done = items.filter((i) => i.state === "done").length;
  const running = items.some((i) => i.state === "uploading" || i.state === "queued");
  const paused = items.some((i) => i.state === "paused");
  return (
    <section class="uploads" aria-label="Uploads">
      <div class="upload-total">
        <label for="upload-total">
          Uploaded {done} of {items.length} files, {bytes(sent)} of {bytes(total)}
        </label>
        <progress id="upload-total" max={total || 1} value={total ? sent : done ? 1 : 0} />
        {running && (
          <button type="button" onClick={() => items.forEach(pauseOne)}>
            Pause all
          </button>
        )}
        {paused && (
          <button type="button" onClick={() => items.forEach(resumeOne)}>
            Resume all
          </button>
        )}
        {done > 0 && (
          <button type="button" class="link" onClick={clearDone}>
            Clear finished
          </button>
        )}
      </div>
      <ul>
        {items.map((i) => (
          <li key={i.id} class={`upload ${i.state}`} data-path={i.path}>
            <label for={`up-${i.id}`}>
              <span class="name">{i.path}</span>{" "}
              <span class="state">
                {i.state === "error" ? `failed: ${i.error}` : i.state} · {bytes(Math.min(i.sent, i.file.size))} /{" "}
                {bytes(i.file.size)}
              </span>
            </label>
            <progress
              id={`up-${i.id}`}
              max={i.file.size || 1}
              value={i.file.size ? i.sent : i.state === "done" ? 1 : 0}
            />
            {(i.state === "uploading" || i.state === "queued") && (
              <button type="button" onClick={() => pauseOne(i)} aria-label={`Pause ${i.path}`}>
                Pause
              </button>
            )}
            {(i.state === "paused" || i.state === "error") && (
              <button type="button" onClick={() => resumeOne(i)} aria-label={`Resume ${i.path}`}>
                Resume
              </button>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

// ---- the browser ----

/** A row's action menu closes once an action is picked (focus goes to the dialog). */
const closeMenu = (el: HTMLElement) => {
  const d = el.closest("details");
  if (d) d.open = false;
};

type Action =
  | { kind: "rename" | "move" | "copy" | "delete" | "share"; entry: Entry }
  | { kind: "mkdir" }
  | { kind: "bulk-move" | "bulk-copy" | "bulk-delete"; entries: Entry[] }
  | undefined;

export function Files(props: { path: string; canShare: boolean }) {
  const { path } = props;
  const listing = useLoad(() => listAll(path), [path]);
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "name", desc: false });
  const [filter, setFilter] = useState("");
  const [action, setAction] = useState<Action>(undefined);
  const [dragging, setDragging] = useState(false);
  const [note, setNote] = useState("");
  const reloadSoon = useRef<number | undefined>(undefined);
  const up = useUploads(() => {
    clearTimeout(reloadSoon.current);
    reloadSoon.current = window.setTimeout(listing.reload, 200);
  });
  const filesInput = useRef<HTMLInputElement>(null);
  const dirInput = useRef<HTMLInputElement>(null);

  const [limit, setLimit] = useState(ROWS_STEP);
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  useEffect(() => {
    setFilter("");
    setSelected(new Set());
  }, [path]);
  useEffect(() => setLimit(ROWS_STEP), [path, filter]);

  const shown = useMemo(() => {
    const q = filter.trim().toLowerCase();
    const rows = (listing.data ?? []).filter((e) => !q || e.name.toLowerCase().includes(q));
    const dir = sort.desc ? -1 : 1;
    return rows.sort((a, b) => {
      if (a.kind !== b.kind) return a.kind === "dir" ? -1 : 1;
      const k = sort.key;
      const c =
        k === "name" ? a.name.localeCompare(b.name) : k === "size" ? a.size - b.size : a.mtime.localeCompare(b.mtime);
      return c * dir;
    });
  }, [listing.data, filter, sort]);

  const sortButton = (key: SortKey, label: string) => {
    const active = sort.key === key;
    return (
      <th scope="col" aria-sort={active ? (sort.desc ? "descending" : "ascending") : "none"}>
        <button type="button" class="sort" onClick={() => setSort({ key, desc: active ? !sort.desc : false })}>
          {label}
          <span aria-hidden="true">{active ? (sort.desc ? " ▼" : " ▲") : ""}</span>
        </button>
      </th>
    );
  };

  const pick = (input: HTMLInputElement | null) => {
    const files = input?.files;
    if (!files || files.length === 0) return;
    up.add(
      path,
      [...files].map((f) => ({ file: f, rel: f.webkitRelativePath || f.name })),
    );
    input.value = "";
  };

  const done = (msg: string) => {
    setAction(undefined);
    setSelected(new Set());
    setNote(msg);
    listing.reload();
  };
  const picked = (listing.data ?? []).filter((e) => selected.has(e.path));
  const toggle = (p: string, on: boolean) => {
    const next = new Set(selected);
    if (on) next.add(p);
    else next.delete(p);
    setSelected(next);
  };
  const visible = shown.slice(0, limit);
  const allShown = visible.length > 0 && visible.every((e) => selected.has(e.path));
  /** Runs `op` on each entry in turn; the first failures are reported, the rest still run. */
  const bulk = async (entries: Entry[], op: (e: Entry) => Promise<unknown>, verb: string) => {
    const failed: string[] = [];
    for (const e of entries) {
      try {
        await op(e);
      } catch (err) {
        failed.push(`${e.name}: ${(err as Error).message}`);
      }
    }
    const ok = entries.length - failed.length;
    if (failed.length) throw new Error(`${verb} ${ok} of ${entries.length}; ${failed.slice(0, 3).join("; ")}`);
    done(`${verb} ${ok} item(s)`);
  };

  return (
    <section
      class={`files${dragging ? " dragging" : ""}`}
      aria-label="Files"
      onDragOver={(e) => {
        e.preventDefault();
        setDragging(true);
      }}
      onDragLeave={(e) => {
        if (e.currentTarget === e.target) setDragging(false);
      }}
      onDrop={async (e) => {
        e.preventDefault();
        setDragging(false);
        if (e.dataTransfer) up.add(path, await droppedFiles(e.dataTransfer));
      }}
    >
      <Breadcrumbs path={path} />
      <div class="toolbar">
        <p class="field search">
          <label for="search">Search in this folder</label>
          <input id="search" type="search" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} />
        </p>
        <button type="button" onClick={() => filesInput.current?.click()}>
          Upload files
        </button>
        <button type="button" onClick={() => dirInput.current?.click()}>
          Upload folder
        </button>
        <button type="button" onClick={() => setAction({ kind: "mkdir" })}>
          New folder
        </button>
        <a class="button" href={`/api/v1/zip${qs({ path })}`} download>
          Download as zip
        </a>
        <input
          ref={filesInput}
          type="file"
          multiple
          hidden
          aria-label="Files to upload"
          data-testid="upload-files"
          onChange={(e) => pick(e.currentTarget)}
        />
        <input
          ref={dirInput}
          type="file"
          hidden
          aria-label="Folder to upload"
          {...{ webkitdirectory: true }}
          onChange={(e) => pick(e.currentTarget)}
        />
      </div>
      <p class="hint">Drop files or folders anywhere here to upload them into this folder.</p>
      <p class="note" role="status">
        {note}
      </p>
      <Uploads up={up} />
      {picked.length > 0 && (
        <section class="bulk" aria-label="Selection">
          <strong>{picked.length} selected</strong>
          <button type="button" onClick={() => setAction({ kind: "bulk-move", entries: picked })}>
            Move selected…
          </button>
          <button type="button" onClick={() => setAction({ kind: "bulk-copy", entries: picked })}>
            Copy selected…
          </button>
          <button type="button" class="danger" onClick={() => setAction({ kind: "bulk-delete", entries: picked })}>
            Delete selected…
          </button>
          <button type="button" class="link" onClick={() => setSelected(new Set())}>
            Clear selection
          </button>
        </section>
      )}
      <ErrorText error={listing.error} />
      <table class="listing">
        <caption class="sr-only">
          Contents of {path}
          {filter ? `, matching “${filter}”` : ""}
        </caption>
        <thead>
          <tr>
            <th scope="col" class="select">
              <input
                type="checkbox"
                aria-label="Select all shown"
                checked={allShown}
                onChange={(ev) => {
                  const next = new Set(selected);
                  for (const e of visible) {
                    if (ev.currentTarget.checked) next.add(e.path);
                    else next.delete(e.path);
                  }
                  setSelected(next);
                }}
              />
            </th>
            {sortButton("name", "Name")}
            {sortButton("size", "Size")}
            {sortButton("mtime", "Modified")}
            <th scope="col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {path !== "/" && (
            <tr>
              <td colSpan={5}>
                <a href={filesHash(parentOf(path))}>.. (up)</a>
              </td>
            </tr>
          )}
          {shown.slice(0, limit).map((e) => (
            <tr key={e.path} data-name={e.name}>
              <td class="select">
                <input
                  type="checkbox"
                  aria-label={`Select ${e.name}`}
                  checked={selected.has(e.path)}
                  onChange={(ev) => toggle(e.path, ev.currentTarget.checked)}
                />
              </td>
              <td class="name">
                {e.kind === "dir" ? (
                  <a href={filesHash(e.path)}>
                    <FolderIcon />
                    {e.name}/
                  </a>
                ) : (
                  <a href={fileUrl(e.path)} download={e.name}>
                    {e.name}
                  </a>
                )}
              </td>
              <td class="num">{e.kind === "dir" ? "" : bytes(e.size)}</td>
              <td class="time">{when(e.mtime)}</td>
              <td class="actions">
                <details>
                  <summary aria-label={`Actions for ${e.name}`}>⋯</summary>
                  <div class="menu">
                    {(["rename", "move", "copy", "delete"] as const).map((k) => (
                      <button
                        key={k}
                        type="button"
                        onClick={(ev) => {
                          closeMenu(ev.currentTarget);
                          setAction({ kind: k, entry: e });
                        }}
                      >
                        {k[0].toUpperCase() + k.slice(1)}
                      </button>
                    ))}
                    {props.canShare && (
                      <button
                        type="button"
                        onClick={(ev) => {
                          closeMenu(ev.currentTarget);
                          setAction({ kind: "share", entry: e });
                        }}
                      >
                        Share
                      </button>
                    )}
                  </div>
                </details>
              </td>
            </tr>
          ))}
          {shown.length > limit && (
            <tr>
              <td colSpan={5}>
                <button type="button" class="link" onClick={() => setLimit(limit + ROWS_STEP)}>
                  Show {Math.min(ROWS_STEP, shown.length - limit)} more of {shown.length - limit} not shown
                </button>
              </td>
            </tr>
          )}
          {!listing.loading && shown.length === 0 && (
            <tr>
              <td colSpan={5} class="empty">
                {filter ? "Nothing here matches." : "This folder is empty."}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      {action?.kind === "mkdir" && (
        <Dialog title="New folder" onClose={() => setAction(undefined)}>
          <ActionForm
            submit="Create"
            action={async (f) => {
              const name = str(f, "name");
              await post("/api/v1/fs/mkdir", { path: joinPath(path, name) });
              done(`Created ${name}`);
            }}
          >
            <p class="field">
              <label for="mkdir-name">Folder name</label>
              <input id="mkdir-name" name="name" required autofocus />
            </p>
          </ActionForm>
        </Dialog>
      )}
      {(action?.kind === "rename" || action?.kind === "move" || action?.kind === "copy") && (
        <Dialog
          title={`${action.kind[0].toUpperCase()}${action.kind.slice(1)} ${action.entry.name}`}
          onClose={() => setAction(undefined)}
        >
          <ActionForm
            submit={action.kind[0].toUpperCase() + action.kind.slice(1)}
            action={async (f) => {
              const target = str(f, "target");
              const to = action.kind === "rename" ? joinPath(parentOf(action.entry.path), target) : target;
              await post(`/api/v1/fs/${action.kind === "copy" ? "copy" : "rename"}`, {
                from: action.entry.path,
                to,
                overwrite: f.get("overwrite") === "on",
              });
              done(
                `${action.kind === "copy" ? "Copied" : action.kind === "move" ? "Moved" : "Renamed"} ${action.entry.name}`,
              );
            }}
          >
            <p class="field">
              <label for="target">{action.kind === "rename" ? "New name" : "Destination path"}</label>
              <input
                id="target"
                name="target"
                required
                autofocus
                value={action.kind === "rename" ? action.entry.name : action.entry.path}
              />
            </p>
            <p class="check">
              <input id="overwrite" name="overwrite" type="checkbox" />
              <label for="overwrite">Replace an existing file</label>
            </p>
          </ActionForm>
        </Dialog>
      )}
      {action?.kind === "delete" && (
        <Dialog title={`Delete ${action.entry.name}?`} onClose={() => setAction(undefined)}>
          <p>{action.entry.kind === "dir" ? "The folder must be empty." : "The file is removed for good."}</p>
          <ActionForm
            submit="Delete"
            class="danger"
            action={async () => {
              await del(fileUrl(action.entry.path));
              done(`Deleted ${action.entry.name}`);
            }}
          />
        </Dialog>
      )}
      {action?.kind === "share" && <ShareDialog entry={action.entry} onClose={() => setAction(undefined)} />}
      {(action?.kind === "bulk-move" || action?.kind === "bulk-copy") && (
        <Dialog
          title={`${action.kind === "bulk-move" ? "Move" : "Copy"} ${action.entries.length} item(s)`}
          onClose={() => setAction(undefined)}
        >
          <ActionForm
            submit={action.kind === "bulk-move" ? "Move" : "Copy"}
            action={async (f) => {
              const dest = str(f, "dest") || "/";
              const copy = action.kind === "bulk-copy";
              await bulk(
                action.entries,
                (e) =>
                  post(`/api/v1/fs/${copy ? "copy" : "rename"}`, {
                    from: e.path,
                    to: joinPath(dest, e.name),
                    overwrite: f.get("bulk-overwrite") === "on",
                  }),
                copy ? "Copied" : "Moved",
              );
            }}
          >
            <p class="field">
              <label for="bulk-dest">Destination folder</label>
              <input id="bulk-dest" name="dest" required autofocus value={path} />
            </p>
            <p class="check">
              <input id="bulk-overwrite" name="bulk-overwrite" type="checkbox" />
              <label for="bulk-overwrite">Replace existing files</label>
            </p>
          </ActionForm>
        </Dialog>
      )}
      {action?.kind === "bulk-delete" && (
        <Dialog title={`Delete ${action.entries.length} item(s)?`} onClose={() => setAction(undefined)}>
          <p>{action.entries.map((e) => e.name).join(", ")}</p>
          <p>Files are removed for good; folders must be empty.</p>
          <ActionForm
            submit="Delete"
            class="danger"
            action={() => bulk(action.entries, (e) => del(fileUrl(e.path)), "Deleted")}
          />
        </Dialog>
      )}
    </section>
  );
}
