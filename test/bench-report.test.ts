// bench/lib/report.ts writeDoc: rewriting docs/benchmarks.md keeps the notes written by hand under a section's
// generated figures (it dropped them, and lanes restored theirs by hand), and replaces only the figures.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { writeDoc } from "../bench/lib/report.ts";
import { removeDir, tempDir } from "./helpers/atrest.ts";

test("writeDoc keeps hand-written notes under each section and replaces the figures", async () => {
  const dir = await tempDir("atrest-benchdoc-");
  try {
    const path = join(dir, "benchmarks.md");
    const sections = (a: string, b: string) => [
      { name: "one", title: "One", body: a },
      { name: "two", title: "Two", body: b },
    ];
    writeDoc(path, "# B", sections("figures 1", "figures 2"), "## Method\n\n- m");
    const withNotes = readFileSync(path, "utf8").replace(
      "<!-- bench:one:end -->",
      "<!-- bench:one:end -->\n\nWhere the time goes: a note.",
    );
    writeFileSync(path, withNotes);
    writeDoc(path, "# B", sections("figures 1b", "figures 2"), "## Method\n\n- m");
    const text = readFileSync(path, "utf8");
    assert.match(text, /figures 1b\n<!-- bench:one:end -->\n\nWhere the time goes: a note\.\n\n## Two/);
    assert.doesNotMatch(text, /figures 1\n/);
    assert.equal(text.match(/a note/g)?.length, 1);
    assert.match(text, /<!-- bench:two:end -->\n\n## Method/);
  } finally {
    await removeDir(dir);
  }
});
