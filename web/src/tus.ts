// A small tus 1.0 client (creation + core), enough for the browser: create the upload, PATCH it in chunks through
// XMLHttpRequest (for upload progress), pause by aborting the request in flight, resume by asking the server for its
// offset (HEAD) and going on from there. The server commits the file when the last byte arrives.
import { headers } from "./api.ts";

const TUS = { "tus-resumable": "1.0.0" };
// One PATCH per 64 MiB: between two PATCHes the upload stops for a round trip (the server answers the last byte, the
// browser opens the next request); at 8 MiB that idled the stream 64 times per 512 MiB. A pause or a dropped connection
// loses nothing either way: the server keeps what arrived of a cut PATCH and HEAD says where to go on.
const CHUNK = 64 << 20;

export type UploadState = "queued" | "uploading" | "paused" | "done" | "error";

export interface UploadItem {
  id: number;
  file: File;
  /** Absolute target path in the user's view. */
  path: string;
  sent: number;
  state: UploadState;
  error?: string;
  location?: string;
  xhr?: XMLHttpRequest;
}

const b64 = (s: string) => btoa(String.fromCharCode(...new TextEncoder().encode(s)));

async function create(item: UploadItem): Promise<string> {
  const r = await fetch("/api/v1/uploads", {
    method: "POST",
    credentials: "same-origin",
    headers: headers({
      ...TUS,
      "upload-length": String(item.file.size),
      "upload-metadata": `path ${b64(item.path)}`,
    }),
  });
  if (r.status !== 201) throw new Error(await problemText(r));
  const loc = r.headers.get("location");
  if (!loc) throw new Error("the server named no upload URL");
  return loc;
}

async function problemText(r: Response): Promise<string> {
  try {
    const p = (await r.json()) as { detail?: string };
    return p.detail ?? `HTTP ${r.status}`;
  } catch {
    return `HTTP ${r.status}`;
  }
}

async function serverOffset(location: string): Promise<number> {
  const r = await fetch(location, { method: "HEAD", credentials: "same-origin", headers: headers(TUS) });
  if (!r.ok) throw new Error(`the server lost the upload (HTTP ${r.status}): start it again`);
  return Number(r.headers.get("upload-offset") ?? "0");
}

/** PATCHes one chunk; resolves with the server's new offset, rejects "aborted" on pause. */
function patch(item: UploadItem, location: string, onProgress: () => void): Promise<number> {
  const start = item.sent;
  const end = Math.min(item.file.size, start + CHUNK);
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    xhr.open("PATCH", location);
    for (const [k, v] of Object.entries(
      headers({ ...TUS, "upload-offset": String(start), "content-type": "application/offset+octet-stream" }),
    )) {
      xhr.setRequestHeader(k, v);
    }
    xhr.upload.onprogress = (e) => {
      item.sent = start + e.loaded;
      onProgress();
    };
    xhr.onload = () => {
      item.xhr = undefined;
      if (xhr.status === 204) resolve(Number(xhr.getResponseHeader("upload-offset") ?? end));
      // the server is still finishing the request a pause cut (or has another offset): ask again
      else if (xhr.status === 409) resolve(-1);
      else {
        let detail = `HTTP ${xhr.status}`;
        try {
          detail = (JSON.parse(xhr.responseText) as { detail?: string }).detail ?? detail;
        } catch {}
        reject(new Error(detail));
      }
    };
    xhr.onerror = () => {
      item.xhr = undefined;
      reject(new Error("network error"));
    };
    xhr.onabort = () => {
      item.xhr = undefined;
      reject(new Error("aborted"));
    };
    xhr.send(item.file.slice(start, end));
  });
}

/** Runs (or resumes) one upload until it is done, paused or failed; `changed` is called on every step. */
export async function run(item: UploadItem, changed: () => void): Promise<void> {
  item.state = "uploading";
  item.error = undefined;
  changed();
  try {
    if (!item.location) {
      item.location = await create(item);
      item.sent = 0;
    } else {
      item.sent = await serverOffset(item.location);
    }
    let conflicts = 0;
    while (item.sent < item.file.size) {
      if ((item.state as UploadState) === "paused") return;
      const offset = await patch(item, item.location, changed);
      if (offset < 0) {
        if (++conflicts > 20) throw new Error("the server keeps refusing the offset");
        await new Promise((r) => setTimeout(r, 250));
        item.sent = await serverOffset(item.location);
      } else item.sent = offset;
      changed();
    }
    item.state = "done";
  } catch (e) {
    if ((item.state as UploadState) === "paused") return;
    item.state = "error";
    item.error = e instanceof Error ? e.message : String(e);
  }
  changed();
}

export function pause(item: UploadItem): void {
  if (item.state !== "uploading" && item.state !== "queued") return;
  item.state = "paused";
  item.xhr?.abort();
}
