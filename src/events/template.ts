// `{field}` placeholders in rename names, move targets, email texts and command arguments. Unknown fields are an
// error at run time rather than silently empty, so a typo does not scatter files under odd names.
import { AtrestError } from "../errors.ts";

/** Fields of the file an action works on, added to the event's fields. */
export function fileFields(path: string | undefined, now: Date): Record<string, string> {
  const out: Record<string, string> = {
    date: now.toISOString().slice(0, 10).replaceAll("-", ""),
    time: now.toISOString().slice(11, 19).replaceAll(":", ""),
  };
  if (path === undefined) return out;
  const name = path.slice(path.lastIndexOf("/") + 1);
  const dot = name.lastIndexOf(".");
  out.file = path;
  out.name = name;
  out.dir = path.slice(0, path.lastIndexOf("/")) || "/";
  out.stem = dot > 0 ? name.slice(0, dot) : name;
  out.ext = dot > 0 ? name.slice(dot + 1) : "";
  return out;
}

export function expand(template: string, fields: Record<string, string>): string {
  return template.replace(/\{([a-zA-Z]+)\}/g, (_, key: string) => {
    const v = fields[key];
    if (v === undefined) throw new AtrestError("INVALID_INPUT", `template field {${key}} is not available here`);
    return v;
  });
}
