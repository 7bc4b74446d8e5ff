// `key-rotated` events. Rotations happen inside the key manager (a CLI command, its rotation scheduler, another
// process or host), which records them in its own audit log, not in the file server's. So the engine watches the key
// list instead: a key whose current version went up since the last look yields one event per new version. The last
// seen versions are kept in the settings table, so a rotation while the server was down still fires after the start.
import type { KeyProvider } from "../kms/api/types.ts";
import type { MetaStore } from "../store/types.ts";
import type { TriggerEvent } from "./event.ts";

const SETTING = "events.key-versions";

interface Snapshot {
  /** When the versions were read (ms). */
  at: number;
  versions: Record<string, number>;
}

async function readSnapshot(store: MetaStore): Promise<Snapshot | undefined> {
  const raw = await store.getSetting(SETTING);
  return raw ? JSON.parse(raw.toString("utf8")) : undefined;
}

async function writeSnapshot(store: MetaStore, snapshot: Snapshot): Promise<void> {
  await store.transaction((tx) => tx.setSetting(SETTING, Buffer.from(JSON.stringify(snapshot))));
}

async function currentVersions(keys: KeyProvider): Promise<Record<string, number>> {
  return Object.fromEntries((await keys.listKeys()).map((k) => [k.name, k.currentVersion]));
}

/**
 * Records the key versions as they are now: the starting point when watching begins (a `key-rotated` rule is added
 * or enabled while no other one was watching), so earlier rotations are not replayed.
 */
export async function keyBaseline(keys: KeyProvider, store: MetaStore, now: number): Promise<void> {
  await writeSnapshot(store, { at: now, versions: await currentVersions(keys) });
}

/** Key versions that appeared since the last look (none on the very first look: that one is the baseline). */
export async function rotatedKeys(keys: KeyProvider, store: MetaStore, now: number): Promise<TriggerEvent[]> {
  const seen = await readSnapshot(store);
  const versions = await currentVersions(keys);
  const events: TriggerEvent[] = [];
  for (const [name, current] of Object.entries(versions)) {
    const before = seen?.versions[name];
    // a key seen for the first time was created, not rotated
    if (before === undefined) continue;
    for (let v = before + 1; v <= current; v++) {
      events.push({
        kind: "key-rotated",
        time: new Date(now).toISOString(),
        user: "kms",
        effectiveUser: "kms",
        protocol: "kms",
        keyRef: `kek:${name}:v${v}`,
      });
    }
  }
  await writeSnapshot(store, { at: now, versions });
  return events;
}
