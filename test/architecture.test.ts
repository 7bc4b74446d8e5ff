// The import-graph check (issue 10 "Done when"): every import in src/ (static, re-export, dynamic, type-only) must
// point to the importer's layer or a lower one (test/architecture/layers.ts), kms internals stay behind kms/api, and
// no two folders import each other (directly or round a loop). File-level cycles are reported too.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { describe, it } from "node:test";
import { KMS_INTERNALS_ALLOWED, KNOWN_VIOLATIONS, LAYERS } from "./architecture/layers.ts";

const SRC = join(import.meta.dirname, "..", "src");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    // .js too: a module that must load before TypeScript does (src/cli/compile-cache.js) is plain JavaScript
    return /\.(ts|js)$/.test(e.name) ? [relative(SRC, p)] : [];
  });
}

/** The source with comments blanked and string/template contents kept, so `import` in a comment never counts. */
function stripComments(src: string): string {
  let out = "";
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    const next = src[i + 1];
    if (c === "/" && next === "/") {
      while (i < src.length && src[i] !== "\n") i++;
    } else if (c === "/" && next === "*") {
      const end = src.indexOf("*/", i + 2);
      i = end < 0 ? src.length : end + 2;
      out += " ";
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === "\\" ? 2 : 1;
      out += src.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const IMPORT_PATTERNS = [
  // import x from "…", import type { … } from "…", export { … } from "…", export * from "…"
  /(?:^|[;\s}])(?:import|export)\s+(?:type\s+)?(?:[\w*${}\s,]+?\s+from\s*)?["']([^"']+)["']/g,
  // import("…"), also inside type positions: typeof import("…")
  /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
];

/** Relative imports of `file` (a path under src/), resolved to paths under src/; bare and node: ones are skipped. */
export function importsOf(file: string, text: string): string[] {
  const code = stripComments(text);
  const found = new Set<string>();
  for (const pattern of IMPORT_PATTERNS) {
    for (const m of code.matchAll(pattern)) {
      const spec = m[1] as string;
      if (!spec.startsWith(".")) continue;
      found.add(normalize(join(dirname(file), spec)));
    }
  }
  return [...found];
}

function layerOf(file: string): { name: string; rank: number } {
  let best: { name: string; rank: number; length: number } | undefined;
  for (const [name, layer] of Object.entries(LAYERS)) {
    for (const p of layer.paths) {
      if ((p.endsWith("/") ? file.startsWith(p) : file === p) && (!best || p.length > best.length)) {
        best = { name, rank: layer.rank, length: p.length };
      }
    }
  }
  if (!best) throw new Error(`src/${file} is in no layer: add its folder to test/architecture/layers.ts`);
  return best;
}

/** The folder a file counts in for cycles: its first path segment, kms/api apart from the kms service. */
function folderOf(file: string): string {
  if (file.startsWith("kms/api/")) return "kms/api";
  const slash = file.indexOf("/");
  return slash < 0 ? file : file.slice(0, slash);
}

function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of sourceFiles(SRC)) g.set(f, importsOf(f, readFileSync(join(SRC, f), "utf8")));
  return g;
}

function layerViolations(g: Map<string, string[]>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [from, targets] of g) {
    const a = layerOf(from);
    for (const to of targets) {
      const b = layerOf(to);
      if (b.rank > a.rank) out.set(`${from} -> ${to}`, `${a.name} may not import ${b.name}`);
      const kmsInternal = to.startsWith("kms/") && !to.startsWith("kms/api/");
      if (kmsInternal && !from.startsWith("kms/") && !KMS_INTERNALS_ALLOWED.some((p) => from.startsWith(p))) {
        out.set(`${from} -> ${to}`, "outside src/kms only app.ts and the CLI import kms internals; use kms/api");
      }
    }
  }
  return out;
}

/** Strongly connected components with more than one member (Tarjan), each sorted. */
function cycles(edges: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  let n = 0;
  const visit = (v: string): void => {
    index.set(v, n);
    low.set(v, n++);
    stack.push(v);
    on.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(scc.sort());
    }
  };
  for (const v of edges.keys()) if (!index.has(v)) visit(v);
  return out;
}

function folderEdges(g: Map<string, string[]>): Map<string, Set<string>> {
  const e = new Map<string, Set<string>>();
  for (const [from, targets] of g) {
    const a = folderOf(from);
    if (!e.has(a)) e.set(a, new Set());
    for (const to of targets) if (folderOf(to) !== a) e.get(a)?.add(folderOf(to));
  }
  return e;
}

/** The imports that close a folder cycle: those from a folder of the cycle into another folder of it. */
function cycleEdges(g: Map<string, string[]>, members: string[]): string[] {
  const inCycle = new Set(members);
  const out: string[] = [];
  for (const [from, targets] of g) {
    for (const to of targets) {
      if (folderOf(from) !== folderOf(to) && inCycle.has(folderOf(from)) && inCycle.has(folderOf(to))) {
        out.push(`${from} -> ${to}`);
      }
    }
  }
  return out;
}

/** The graph without the imports KNOWN_VIOLATIONS tolerates, so their cycles do not count until they go. */
function withoutKnown(g: Map<string, string[]>): Map<string, string[]> {
  return new Map([...g].map(([f, ts]) => [f, ts.filter((t) => !(`${f} -> ${t}` in KNOWN_VIOLATIONS))]));
}

const describeEdge = (edge: string) => `src/${edge.replace(" -> ", " imports src/")}`;

describe("import graph (dependencies point down)", () => {
  const g = graph();

  it("every import of src/ resolves to a file of src/", () => {
    const missing = [...g].flatMap(([from, ts]) =>
      ts.filter((t) => !g.has(t)).map((t) => `src/${from} imports src/${t}`),
    );
    assert.deepEqual(missing, []);
  });

  it("no file imports a higher layer, and kms internals stay behind kms/api", () => {
    const unexpected = [...layerViolations(g)]
      .filter(([edge]) => !(edge in KNOWN_VIOLATIONS))
      .map(([edge, why]) => `${describeEdge(edge)}: ${why}`);
    assert.deepEqual(unexpected, [], `upward imports:\n  ${unexpected.join("\n  ")}`);
  });

  it("no cycle between folders", () => {
    const h = withoutKnown(g);
    const found = cycles(folderEdges(h)).map(
      (c) => `${c.join(" <-> ")}:\n    ${cycleEdges(h, c).map(describeEdge).join("\n    ")}`,
    );
    assert.deepEqual(found, [], `folder cycles:\n  ${found.join("\n  ")}`);
  });

  it("no cycle between files", (t) => {
    const h = withoutKnown(g);
    const found = cycles(new Map([...h].map(([f, ts]) => [f, new Set(ts)]))).map((c) =>
      c.map((f) => `src/${f}`).join(" <-> "),
    );
    for (const c of cycles(new Map([...g].map(([f, ts]) => [f, new Set(ts)])))) {
      t.diagnostic(`file cycle (with known violations): ${c.join(" <-> ")}`);
    }
    assert.deepEqual(found, [], `file cycles:\n  ${found.join("\n  ")}`);
  });

  it("KNOWN_VIOLATIONS lists only imports that still exist (remove an entry when you fix it)", () => {
    const edges = new Set([...g].flatMap(([from, ts]) => ts.map((t) => `${from} -> ${t}`)));
    const stale = Object.keys(KNOWN_VIOLATIONS).filter((e) => !edges.has(e));
    assert.deepEqual(stale, []);
  });
});

describe("import parser", () => {
  it("finds static, re-export, type and dynamic imports, not those in comments or strings", () => {
    const text = [
      'import { a } from "./a.ts";',
      'import type { B } from "../b/b.ts";',
      'export { c } from "./c.ts";',
      'export * from "./d.ts";',
      'import "./side.ts";',
      'const m = await import("./dyn.ts");',
      'type T = typeof import("./typeof.ts");',
      "import {\n  x,\n  type Y,\n} from './multi.ts';",
      '// import { no } from "./comment.ts";',
      '/* import { no } from "./block.ts"; */',
      'import { z } from "node:fs";',
    ].join("\n");
    assert.deepEqual(importsOf("vfs/vfs.ts", text).sort(), [
      "b/b.ts",
      "vfs/a.ts",
      "vfs/c.ts",
      "vfs/d.ts",
      "vfs/dyn.ts",
      "vfs/multi.ts",
      "vfs/side.ts",
      "vfs/typeof.ts",
    ]);
  });
});

describe("the check itself", () => {
  it("names an upward import, and kms internals reached from outside", () => {
    const g = new Map([
      ["vfs/vfs.ts", ["pgp/keystore.ts", "store/types.ts"]],
      ["pgp/keystore.ts", ["kms/keyring.ts", "kms/api/types.ts"]],
      ["store/types.ts", []],
    ]);
    assert.deepEqual(
      [...layerViolations(g)],
      [
        ["vfs/vfs.ts -> pgp/keystore.ts", "vfs may not import pgp"],
        [
          "pgp/keystore.ts -> kms/keyring.ts",
          "outside src/kms only app.ts and the CLI import kms internals; use kms/api",
        ],
      ],
    );
    assert.equal(describeEdge("vfs/vfs.ts -> pgp/keystore.ts"), "src/vfs/vfs.ts imports src/pgp/keystore.ts");
  });

  it("finds a cycle between two folders of one layer", () => {
    const g = new Map([
      ["keys/a.ts", ["pgp/b.ts"]],
      ["pgp/b.ts", ["keys/c.ts"]],
      ["keys/c.ts", []],
    ]);
    assert.deepEqual(cycles(folderEdges(g)), [["keys", "pgp"]]);
    assert.deepEqual(cycleEdges(g, ["keys", "pgp"]), ["keys/a.ts -> pgp/b.ts", "pgp/b.ts -> keys/c.ts"]);
    assert.deepEqual(cycles(new Map([...g].map(([f, ts]) => [f, new Set(ts)]))), []);
  });
});
