// The page a share link opens in a browser: plain HTML rendered here (every value escaped), a strict CSP with a nonce
// for its one small script (the password prompt and uploads). Downloads are plain links and need no script.
import { randomBytes } from "node:crypto";

const ESC: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ESC[c] ?? c);

function size(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** What the page shows of a share (the PublicShare answer). */
export interface PublicShareInfo {
  kind: "file" | "dir";
  name: string;
  size?: number;
  owner: string;
  expiresAt: string | null;
  allowDownload: boolean;
  allowUpload: boolean;
}

export interface PageInput {
  link: string;
  share?: PublicShareInfo;
  path?: string;
  entries?: { name: string; path: string; kind: "file" | "dir"; size: number }[];
  error?: string;
  passwordForm?: boolean;
}

export function sharePage(p: PageInput): { html: string; nonce: string } {
  const nonce = randomBytes(16).toString("base64");
  const api = `/api/v1/s/${encodeURIComponent(p.link)}`;
  const page = `${api}/page`;
  const q = (path: string) => `?path=${encodeURIComponent(path)}`;
  const parts: string[] = [];
  const s = p.share;
  if (p.error && !p.passwordForm) parts.push(`<p role="alert">${esc(p.error)}</p>`);
  if (p.passwordForm) {
    parts.push(`<form id="unlock"><label for="pw">Password</label>
<input id="pw" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Open</button></form><p id="msg" role="alert">${p.error && !p.error.includes("needs") ? esc(p.error) : ""}</p>`);
  }
  if (s) {
    parts.push(
      `<h1>${esc(s.name)}</h1><p>Shared by ${esc(s.owner)}${s.expiresAt ? `, until ${esc(s.expiresAt)}` : ""}</p>`,
    );
    if (s.kind === "file" && s.allowDownload) {
      parts.push(`<p><a href="${api}/download">Download</a> (${size(s.size ?? 0)})</p>`);
    }
    if (s.kind === "dir" && s.allowDownload && p.entries) {
      const at = p.path ?? "/";
      parts.push(`<p>Folder ${esc(at)} · <a href="${api}/zip${q(at)}">Download all as zip</a></p>`);
      const rows = p.entries.map((e) =>
        e.kind === "dir"
          ? `<tr><td><a href="${page}${q(e.path)}">${esc(e.name)}/</a></td><td></td></tr>`
          : `<tr><td><a href="${api}/download${q(e.path)}">${esc(e.name)}</a></td><td>${size(e.size)}</td></tr>`,
      );
      if (at !== "/") {
        const up = at.split("/").slice(0, -1).join("/") || "/";
        rows.unshift(`<tr><td><a href="${page}${q(up)}">..</a></td><td></td></tr>`);
      }
      parts.push(`<table><thead><tr><th>Name</th><th>Size</th></tr></thead><tbody>${rows.join("")}</tbody></table>`);
    }
    if (s.kind === "dir" && s.allowUpload) {
      parts.push(`<form id="upload"><label for="files">Upload files</label>
<input id="files" type="file" multiple required><button type="submit">Upload</button></form><p id="up" role="status"></p>`);
    }
  }
  const script = `const api=${JSON.stringify(api)};const base=${JSON.stringify(p.path && p.path !== "/" ? p.path : "")};
const u=document.getElementById("unlock");if(u)u.addEventListener("submit",async(e)=>{e.preventDefault();
const r=await fetch(api+"/unlock",{method:"POST",headers:{"content-type":"application/json"},body:JSON.stringify({password:document.getElementById("pw").value})});
if(r.ok)location.reload();else document.getElementById("msg").textContent=(await r.json()).detail;});
const f=document.getElementById("upload");if(f)f.addEventListener("submit",async(e)=>{e.preventDefault();const out=document.getElementById("up");
for(const file of document.getElementById("files").files){out.textContent="uploading "+file.name;
const r=await fetch(api+"/files"+base+"/"+encodeURIComponent(file.name),{method:"PUT",body:file});
out.textContent=r.ok?"uploaded "+file.name:(await r.json()).detail;if(!r.ok)return;}});`;
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>${esc(s?.name ?? "Shared link")} · atrest</title>
<style nonce="${nonce}">body{font:16px/1.5 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem;color:#111}
a{color:#0645ad}table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3rem;border-bottom:1px solid #ccc}
input,button{font:inherit;margin:.3rem 0}</style></head>
<body><main>${parts.join("\n")}</main><script nonce="${nonce}">${script}</script></body></html>`;
  return { html, nonce };
}
