// Path globs of trigger rules. Matching is node:path `matchesGlob` (minimatch semantics: `*` stays within one path
// segment, `**` spans segments, `?`, `[abc]`, `{a,b}`; dot files need an explicit dot). Validation catches what
// matchesGlob silently treats as "never matches": relative patterns and unbalanced brackets or braces.
import { matchesGlob } from "node:path";
import { AtrestError } from "../errors.ts";

export function validateGlob(glob: string): void {
  const bad = (why: string) => new AtrestError("INVALID_INPUT", `bad glob "${glob}": ${why}`);
  if (!glob.startsWith("/")) throw bad("must be an absolute path in the server's tree (start with /)");
  if (glob.includes("\0")) throw bad("contains a NUL byte");
  let square = false;
  let braces = 0;
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "\\") {
      i++;
      continue;
    }
    if (square) {
      if (c === "]") square = false;
      continue;
    }
    if (c === "[") square = true;
    else if (c === "{") braces++;
    else if (c === "}" && --braces < 0) throw bad("unbalanced }");
  }
  if (square) throw bad("unclosed [");
  if (braces > 0) throw bad("unclosed {");
}

export function globMatches(path: string, glob: string): boolean {
  return matchesGlob(path, glob);
}
