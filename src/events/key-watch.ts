// `key-rotated` events. Rotations happen inside the key manager (a CLI command, its rotation scheduler, another
// process or host), which records them in its own audit log, not in the file server's. So the engine watches the key
// list instead: a key whose current version went up since the last look yields one event per new version. The last
// seen versions are kept in the settings table, so a rotation while the server was down still fires after the start.
import type { KeyProvider } from "../kms/types.ts";
import type { MetaStore } from "../store/types.ts";
import type { TriggerEvent } from "./event.ts";

const SETTING = "events.key-versions";

export async function rotatedKeys(keys: KeyProvider, store: MetaStore, now: number): Promise<TriggerEvent[]> {
  const raw = await store.getSetting(SETTING);
  const seen: Record<string, number> = raw ? JSON.parse(raw.toString("utf8")) : {};
  const current: Record<string, number> = {};
  const events: TriggerEvent[] = [];
  for (const k of await keys.listKeys()) {
    current[k.name] = k.currentVersion;
    const before = seen[k.name];
    // a key seen for the first time was created (or the watch just started), not rotated
    if (raw === undefined || before === undefined) continue;
    for (let v = before + 1; v <= k.currentVersion; v++) {
      events.push({
        kind: "key-rotated",
        time: new Date(now).toISOString(),
        user: "kms",
        effectiveUser: "kms",
        protocol: "kms",
        keyRef: `kek:${k.name}:v${v}`,
      });
    }
  }
  if (JSON.stringify(current) !== JSON.stringify(seen)) {
    await store.transaction(() => store.setSetting(SETTING, Buffer.from(JSON.stringify(current))));
  }
  return events;
}
