// The page an E2EE sync share link opens (/e/<id>#<key>), for someone without an account. The key stays in this
// page: the fragment is never sent, and only the payload and the encrypted blob are fetched. The file is decrypted
// and verified here (web/src/sync-link.ts) and handed to the browser's download only once every byte checked out.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api } from "./api.ts";
import { bytes, when } from "./format.ts";
import { ContainerReader, fromB64url, type LinkPayload, openPayload, syncFileId } from "./sync-link.ts";
import { ErrorText } from "./ui.tsx";

interface Info {
  payload: string;
  blobHash: string;
  blobSize: number;
  expiresAt: string;
}

type Bytes = Uint8Array<ArrayBuffer>;

async function fetchFile(id: string, p: LinkPayload, onProgress: (n: number) => void): Promise<Blob> {
  const r = await fetch(`/api/v1/sync/links/${id}/blob`, { credentials: "omit" });
  if (!r.ok || !r.body)
    throw new ApiError(
      r.status,
      "LINK",
      r.status === 410 ? "This link has expired or was revoked." : `The server answered ${r.status}.`,
    );
  const reader = new ContainerReader(p.blobSize, syncFileId(p), fromB64url(p.dek, 32));
  const parts: Bytes[] = [];
  let got = 0;
  let size = 0;
  const body = r.body.getReader();
  for (;;) {
    const { done, value } = await body.read();
    if (done) break;
    got += value.length;
    for (const plain of await reader.push(value)) {
      parts.push(plain);
      size += plain.length;
    }
    onProgress(got);
  }
  reader.finish();
  if (size !== p.size) throw new Error("The file's size differs from what the link names.");
  return new Blob(parts, { type: "application/octet-stream" });
}

export function SyncLinkPage(props: { id: string }) {
  const [payload, setPayload] = useState<LinkPayload>();
  const [expires, setExpires] = useState<string>();
  const [error, setError] = useState<unknown>();
  const [progress, setProgress] = useState<number>();
  const [file, setFile] = useState<{ url: string; name: string }>();

  // a fragment pasted or corrected in the address bar is a same-page navigation: start over with the new key
  useEffect(() => {
    const again = () => location.reload();
    addEventListener("hashchange", again);
    return () => removeEventListener("hashchange", again);
  }, []);

  useEffect(() => {
    (async () => {
      let key: Uint8Array<ArrayBuffer>;
      try {
        key = fromB64url(location.hash.slice(1), 32);
      } catch {
        throw new Error("This link is incomplete: its key (the part after #) is missing or cut.");
      }
      let info: Info;
      try {
        info = await api<Info>("GET", `/api/v1/sync/links/${props.id}`, undefined, true);
      } catch (err) {
        if (err instanceof ApiError && err.status === 410) throw new Error("This link has expired or was revoked.");
        if (err instanceof ApiError && err.status === 404) throw new Error("There is no such link.");
        throw err;
      }
      setExpires(info.expiresAt);
      const p = await openPayload(key, props.id, info.payload);
      key.fill(0);
      if (p.blobSize !== info.blobSize) throw new Error("The server's blob is not the one this link names.");
      setPayload(p);
    })().catch(setError);
  }, [props.id]);

  const download = async () => {
    if (!payload) return;
    setError(undefined);
    setProgress(0);
    try {
      const blob = await fetchFile(props.id, payload, setProgress);
      const url = URL.createObjectURL(blob);
      setFile({ url, name: payload.name });
      const a = document.createElement("a");
      a.href = url;
      a.download = payload.name;
      a.click();
    } catch (err) {
      setError(err);
    } finally {
      setProgress(undefined);
    }
  };

  return (
    <>
      <header class="top">
        <span class="brand">atrest</span> <span class="muted">end-to-end encrypted link</span>
      </header>
      <main class="share">
        <h1>{payload ? payload.name : "Shared with you"}</h1>
        {payload && (
          <>
            <p class="muted">
              {bytes(payload.size)}
              {expires ? `, link valid until ${when(expires)}` : ""}. Decrypted in this browser: the server never sees
              the key or the file.
            </p>
            {file ? (
              <p>
                <a class="button" href={file.url} download={file.name}>
                  Save {file.name}
                </a>{" "}
                <span class="muted">verified</span>
              </p>
            ) : (
              <p>
                <button type="button" onClick={download} disabled={progress !== undefined}>
                  Download {payload.name}
                </button>
              </p>
            )}
            {progress !== undefined && (
              <p>
                <label for="link-progress">Decrypting </label>
                <progress id="link-progress" max={payload.blobSize || 1} value={progress} />
              </p>
            )}
          </>
        )}
        <ErrorText error={error} />
      </main>
    </>
  );
}
