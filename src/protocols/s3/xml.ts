// S3's XML answers: escaped text only, no parser for output.
export function esc(s: string): string {
  return s.replace(
    /[<>&"']/g,
    (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;" })[c] as string,
  );
}

/** `<name>text</name>` for every defined value (objects nest, arrays repeat the tag). */
export type XmlValue = string | number | boolean | undefined | XmlObject | XmlValue[];
export interface XmlObject {
  [name: string]: XmlValue;
}

function node(name: string, v: XmlValue): string {
  if (v === undefined) return "";
  if (Array.isArray(v)) return v.map((x) => node(name, x)).join("");
  if (typeof v === "object") return `<${name}>${body(v)}</${name}>`;
  return `<${name}>${esc(String(v))}</${name}>`;
}

function body(o: XmlObject): string {
  return Object.entries(o)
    .map(([k, v]) => node(k, v))
    .join("");
}

export function xmlDoc(root: string, content: XmlObject): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${body(content)}</${root}>`;
}

/** The text of every `<tag>` element (S3 request bodies are small, flat documents). */
export function xmlTexts(xml: string, tag: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, "g");
  for (const m of xml.matchAll(re)) out.push(unesc(m[1] as string));
  return out;
}

function unesc(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };
    if (named[e.toLowerCase()]) return named[e.toLowerCase()] as string;
    return String.fromCodePoint(e[1] === "x" || e[1] === "X" ? Number.parseInt(e.slice(2), 16) : Number(e.slice(1)));
  });
}
