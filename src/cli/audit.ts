import type { Command } from "commander";
import { AUDIT_CONTEXT, AUDIT_KEY_SETTING, dataPaths } from "../app.ts";
import { readAuditLog } from "../audit/log.ts";
import { zero } from "../crypto/bytes.ts";
import { serviceKey } from "../store/service-keys.ts";
import { dataOption, withApp } from "./common.ts";

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("audit trail");
  audit
    .command("tail")
    .description("print the last audit records (decrypted), one JSON object per line")
    .addOption(dataOption())
    .option("-n, --lines <n>", "how many records", "20")
    .action(async (opts) => {
      await withApp(opts.data, async (app) => {
        const key = await serviceKey(app.store, app.keys, AUDIT_KEY_SETTING, "default", AUDIT_CONTEXT);
        try {
          const records = await readAuditLog(dataPaths(opts.data).audit, key);
          for (const r of records.slice(-Number(opts.lines))) process.stdout.write(`${JSON.stringify(r)}\n`);
        } finally {
          zero(key);
        }
      });
    });
}
