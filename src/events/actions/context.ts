// What an action gets: the rule, the event, the file it works on, and a filesystem view that acts as the rule owner
// (their permissions apply, the audit shows job user `trigger:<rule>` and effective user the owner). Rules name
// global paths; the owner reaches only what lies under their home.
import { AtrestError } from "../../errors.ts";
import type { Logger } from "../../logger.ts";
import { normalize, parentAndName } from "../../vfs/paths.ts";
import type { ReadHandle, VfsSession } from "../../vfs/types.ts";
import { eventFields, type TriggerEvent } from "../event.ts";
import type { Action, Rule } from "../schema.ts";
import { fileFields } from "../template.ts";

export interface ActionSecrets {
  secret?: string;
  password?: string;
}

/** The PGP operations the actions need (src/pgp, adapted in ../pgp.ts). */
export interface PgpApi {
  /** Refuses (REFUSED, naming each fingerprint and why) recipients that are unknown, expired, revoked, uncertified. */
  checkRecipients(specs: string[], requireCertified: boolean): Promise<void>;
  /** Refuses when no organisation key exists. */
  checkOrgKey(): Promise<void>;
  /** Encrypts `input` to the recipients' keys (resolved and checked now), optionally signed by the org key. */
  encrypt(
    input: ReadableStream<Uint8Array>,
    recipients: string[],
    opts: { sign: boolean; requireCertified: boolean; filename: string },
  ): Promise<ReadableStream<Uint8Array>>;
  /** Detached ASCII-armored signature by the organisation key. */
  signDetached(input: ReadableStream<Uint8Array>): Promise<ReadableStream<Uint8Array>>;
}

export interface ActionContext {
  rule: Rule;
  action: Action;
  event: TriggerEvent;
  /** Execution id: the idempotency key of webhook deliveries. */
  executionId: string;
  /** 1 for the first attempt of this step. */
  attempt: number;
  /** Global path of the file this action works on. */
  current: string | undefined;
  secrets: ActionSecrets;
  fs: OwnerFs;
  pgp: PgpApi | undefined;
  now: () => number;
  logger: Logger;
  /** Aborted when the engine stops; long actions give up and are retried after the restart. */
  signal: AbortSignal;
}

export interface ActionResult {
  /** Short description for the history ("moved to /out/a.csv", "HTTP 204"). Never a secret. */
  detail: string;
  /** The file the next action works on, when this action produced or moved it; null when it deleted it. */
  current?: string | null;
}

export type ActionRunner = (ctx: ActionContext) => Promise<ActionResult>;

/** Fields for templates: the event's, plus the current file's name parts, date and time. */
export function templateFields(ctx: ActionContext): Record<string, string> {
  return { ...eventFields(ctx.event), rule: ctx.rule.name, ...fileFields(ctx.current, new Date(ctx.now())) };
}

export function requireCurrent(ctx: ActionContext): string {
  if (!ctx.current) throw new AtrestError("INVALID_INPUT", `${ctx.action.type}: the event names no file`);
  return ctx.current;
}

export function joinPath(dir: string, name: string): string {
  return dir === "/" ? `/${name}` : `${dir}/${name}`;
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

export function dirName(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

function isNotFound(err: unknown): boolean {
  return err instanceof AtrestError && err.code === "NOT_FOUND";
}

/** The owner's session addressed with global paths. */
export class OwnerFs {
  readonly session: VfsSession;
  readonly home: string;

  constructor(session: VfsSession, home: string) {
    this.session = session;
    this.home = normalize(home);
  }

  /** The owner's view of a global path; refused when it lies outside the owner's home. */
  view(globalPath: string): string {
    const p = normalize(globalPath);
    if (this.home === "/") return p;
    if (p === this.home) return "/";
    if (!p.startsWith(`${this.home}/`)) {
      throw new AtrestError("PERMISSION_DENIED", `${p} is outside the rule owner's home ${this.home}`);
    }
    return p.slice(this.home.length);
  }

  #global(view: string): string {
    return this.home === "/" ? view : view === "/" ? this.home : `${this.home}${view}`;
  }

  async kind(globalPath: string): Promise<"file" | "dir" | undefined> {
    try {
      return (await this.session.stat(this.view(globalPath))).kind;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** mkdir -p in global terms (each missing level needs the owner's mkdir permission). */
  async ensureDir(globalPath: string): Promise<void> {
    const view = this.view(globalPath);
    if (view === "/") return;
    const kind = await this.kind(globalPath);
    if (kind === "dir") return;
    if (kind === "file") throw new AtrestError("NOT_A_DIRECTORY", `not a directory: ${globalPath}`);
    await this.ensureDir(this.#global(parentAndName(view).parent));
    try {
      await this.session.mkdir(view);
    } catch (err) {
      if (!(err instanceof AtrestError && err.code === "EXISTS")) throw err;
    }
  }

  /** The file as a web stream, read in chunks with backpressure (memory stays flat). */
  readStream(globalPath: string, chunk = 256 * 1024): ReadableStream<Uint8Array> {
    const session = this.session;
    const view = this.view(globalPath);
    let handle: ReadHandle | undefined;
    let offset = 0;
    return new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          handle ??= await session.openRead(view);
          const data = await handle.read(offset, chunk);
          if (data.length === 0) {
            await handle.close();
            controller.close();
            return;
          }
          offset += data.length;
          controller.enqueue(new Uint8Array(data.buffer, data.byteOffset, data.length));
        },
        async cancel() {
          await handle?.close();
        },
      },
      { highWaterMark: 1 },
    );
  }

  /** Writes a stream to a global path: a new version committed atomically on close, nothing on failure. */
  async writeStream(globalPath: string, input: ReadableStream<Uint8Array>, overwrite: boolean): Promise<number> {
    const handle = await this.session.openWrite(this.view(globalPath), { truncate: true, exclusive: !overwrite });
    let size = 0;
    try {
      for await (const chunk of input) {
        const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        await handle.write(size, buf);
        size += buf.length;
      }
    } catch (err) {
      await handle.abort(false);
      throw err;
    }
    await handle.close();
    return size;
  }

  async rename(from: string, to: string, overwrite: boolean): Promise<void> {
    await this.session.rename(this.view(from), this.view(to), overwrite);
  }

  async remove(globalPath: string): Promise<void> {
    await this.session.remove(this.view(globalPath));
  }

  async list(globalPath: string) {
    return this.session.list(this.view(globalPath));
  }
}
