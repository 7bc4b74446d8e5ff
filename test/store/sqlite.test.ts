import { rm } from "node:fs/promises";
import { join } from "node:path";
import { after } from "node:test";
import { openSqliteStore } from "../../src/store/sqlite/index.ts";
import { tempDir } from "../helpers/atrest.ts";
import { metaStoreContract } from "./contract.ts";

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

metaStoreContract({
  name: "sqlite",
  async open() {
    const dir = await tempDir();
    dirs.push(dir);
    return openSqliteStore(join(dir, "meta.db"));
  },
});
