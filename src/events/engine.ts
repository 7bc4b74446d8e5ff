// The trigger engine. Intake runs in every process that opens the data directory (server and CLI): each audit record
// that names a rule's event is matched against the enabled rules and, on a match, queued durably in the database.
// The worker and the scheduler run only in the server (`start()`): they claim due executions, run their actions in
// order as the rule owner, record each step, retry failures with exponential backoff and move executions that keep
// failing to the dead letters. A step that completed is never rerun; one interrupted by a crash is rerun after the
// restart (the actions are written to be safe to repeat; webhooks carry a delivery id for receivers to deduplicate).
import type { AuditEvent, AuditRecord } from "../audit/types.ts";
import { AtrestError } from "../errors.ts";
import type { KeyProvider } from "../kms/api/types.ts";
import type { Logger } from "../logger.ts";
import type { MetaStore } from "../store/types.ts";
import { globalPath } from "../vfs/folders.ts";
import type { SessionInfo, VfsSession } from "../vfs/types.ts";
import { type ActionContext, OwnerFs, type PgpApi } from "./actions/context.ts";
import { RUNNERS } from "./actions/index.ts";
import { matches } from "./conditions.ts";
import { EventsCrypto } from "./crypto.ts";
import { eventKindOf, TRIGGER_USER_PREFIX, type TriggerEvent } from "./event.ts";
import { rotatedKeys } from "./key-watch.ts";
import { TriggerRules } from "./rules.ts";
import { nextFire } from "./schedule.ts";
import { eventsOf, type Rule } from "./schema.ts";
import { type Execution, TriggerStore } from "./store.ts";

export interface EngineDeps {
  store: MetaStore;
  keys: KeyProvider;
  audit: { record(e: AuditEvent): void; onRecord(listener: (r: AuditRecord) => void): () => void };
  logger: Logger;
  openSession(user: string, info: SessionInfo): Promise<VfsSession>;
  /** The OpenPGP key store, when available (PGP actions and recipient validation need it). */
  pgp?: () => PgpApi | undefined;
  /** Milliseconds since the epoch; tests pass a fake clock. */
  clock?: () => number;
}

export interface WorkerOptions {
  /** How often the queue and the schedules are checked (ms). Default 500. */
  pollMs?: number;
  /** Executions running at once. Default 4. */
  concurrency?: number;
  /** How often the key manager's key versions are compared with the last seen ones (ms). Default 10 000. */
  keyWatchMs?: number;
}

/** Error codes that retrying cannot fix: the execution goes straight to the dead letters. */
const PERMANENT = new Set([
  "INVALID_INPUT",
  "INVALID_PATH",
  "PERMISSION_DENIED",
  "EXISTS",
  "NOT_FOUND",
  "IS_A_DIRECTORY",
  "NOT_A_DIRECTORY",
  "UNSUPPORTED",
  "REFUSED",
]);

/** Completed executions are kept this long in the history; dead letters until retried. */
export const HISTORY_DAYS = 30;

/** History entries kept per execution (the oldest are dropped). */
const MAX_LOG = 50;

function codeOf(err: unknown): string {
  return err instanceof AtrestError ? err.code : "FAILED";
}

/** Delay before attempt `failures + 1`: delay × 2^(failures − 1), capped, with ±10 % jitter. */
export function backoffMs(retry: Rule["retry"], failures: number, random = Math.random): number {
  const base = Math.min(retry.delaySeconds * 2 ** Math.max(0, failures - 1), retry.maxDelaySeconds) * 1000;
  return Math.round(base * (0.9 + 0.2 * random()));
}

export class TriggerEngine {
  readonly store: TriggerStore;
  readonly rules: TriggerRules;
  readonly #deps: EngineDeps;
  readonly #now: () => number;
  readonly #unsubscribe: () => void;
  readonly #intake = new Set<Promise<void>>();
  readonly #running = new Map<string, Promise<void>>();
  #abort = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #concurrency = 4;
  #started = false;
  #keysCheckedAt = Number.NEGATIVE_INFINITY;
  #prunedAt = Number.NEGATIVE_INFINITY;
  #keyWatchMs = 10_000;

  constructor(deps: EngineDeps) {
    this.#deps = deps;
    this.#now = deps.clock ?? Date.now;
    this.store = new TriggerStore(deps.store, new EventsCrypto(deps.store, deps.keys), this.#now);
    this.rules = new TriggerRules(this.store, deps.store, deps.audit, () => deps.pgp?.(), deps.keys, this.#now);
    this.#unsubscribe = deps.audit.onRecord((r) => this.#onRecord(r));
  }

  // ---- intake

  #onRecord(r: AuditRecord): void {
    const kind = eventKindOf(r);
    if (!kind || r.user.startsWith(TRIGGER_USER_PREFIX)) return;
    const p = this.#match(r, kind)
      .catch((err) => this.#deps.logger.error({ err: codeOf(err), action: r.action }, "trigger intake failed"))
      .finally(() => this.#intake.delete(p));
    this.#intake.add(p);
  }

  async #match(r: AuditRecord, kind: TriggerEvent["kind"]): Promise<void> {
    const candidates = (await this.store.listRules()).filter((s) => s.enabled && eventsOf(s.rule).includes(kind));
    if (candidates.length === 0) return;
    const effective = r.effectiveUser ?? r.user;
    const user = await this.#deps.store.getUser(effective);
    const event: TriggerEvent = {
      kind,
      time: r.time,
      user: r.user,
      effectiveUser: effective,
      protocol: r.protocol,
      sourceIp: r.sourceIp,
      sessionId: r.sessionId,
      size: r.size,
      keyRef: r.keyRef,
      method: r.method,
      reason: r.reason,
    };
    if (r.path !== undefined) {
      // file events of a user who no longer exists cannot be placed in the global tree
      if (!user) return;
      event.path = globalPath(user.home, r.path);
      if (r.targetPath !== undefined) event.targetPath = globalPath(user.home, r.targetPath);
    }
    const fired = candidates
      .filter((s) => matches(s.rule.conditions, event, { groups: user?.groups ?? [] }))
      .map((s) => s.rule.name);
    if (fired.length === 0) return;
    await this.store.enqueue(fired, event, this.#now());
    this.#wake();
  }

  // ---- worker

  /** Runs the worker and the scheduler (server only). Executions a crash left running resume at their step. */
  async start(opts: WorkerOptions = {}): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    this.#concurrency = opts.concurrency ?? 4;
    this.#keyWatchMs = opts.keyWatchMs ?? 10_000;
    this.#abort = new AbortController();
    const resumed = await this.store.resetRunning();
    if (resumed > 0) this.#deps.logger.warn({ resumed }, "resuming trigger executions interrupted by a stop");
    this.#timer = setInterval(() => this.#tick(), opts.pollMs ?? 500);
    this.#timer.unref();
    this.#wake();
  }

  #wake(): void {
    if (this.#started) setImmediate(() => this.#tick());
  }

  /** One pass: fire due schedules, claim due executions up to the concurrency limit. Exposed for tests. */
  async tick(): Promise<void> {
    if (this.#ticking || this.#abort.signal.aborted) return;
    this.#ticking = true;
    try {
      await this.#schedules();
      await this.#watchKeys();
      await this.#prune();
      const free = this.#concurrency - this.#running.size;
      if (free <= 0) return;
      for (const e of await this.store.claimDue(this.#now(), free)) {
        const p = this.#run(e)
          .catch((err) => this.#deps.logger.error({ err: codeOf(err), execution: e.id }, "trigger execution failed"))
          .finally(() => {
            this.#running.delete(e.id);
            this.#wake();
          });
        this.#running.set(e.id, p);
      }
    } finally {
      this.#ticking = false;
    }
  }

  #tick(): void {
    this.tick().catch((err) => this.#deps.logger.error({ err: codeOf(err) }, "trigger tick failed"));
  }

  async #schedules(): Promise<void> {
    const now = this.#now();
    for (const s of await this.store.listRules()) {
      if (!s.enabled || !s.rule.schedule) continue;
      const last = s.lastFiredAt ?? Date.parse(s.updatedAt);
      if (nextFire(s.rule.schedule, last) > now) continue;
      // One firing however many slots were missed while the server was down.
      const event: TriggerEvent = {
        kind: "schedule",
        time: new Date(now).toISOString(),
        user: `${TRIGGER_USER_PREFIX}${s.rule.name}`,
        effectiveUser: s.rule.owner,
        protocol: "trigger",
      };
      const fire = matches(s.rule.conditions, event, { groups: [] });
      // `s.lastFiredAt` as read: on a store shared by several nodes only one of them fires the slot
      await this.store.fire(s.rule.name, now, fire ? event : undefined, s.lastFiredAt ?? null);
    }
  }

  async #prune(): Promise<void> {
    const now = this.#now();
    if (now - this.#prunedAt < 3_600_000) return;
    this.#prunedAt = now;
    const removed = await this.store.prune(now - HISTORY_DAYS * 86_400_000);
    if (removed > 0) this.#deps.logger.info({ removed }, "trigger history: forgot completed executions");
  }

  async #watchKeys(): Promise<void> {
    const now = this.#now();
    if (now - this.#keysCheckedAt < this.#keyWatchMs) return;
    this.#keysCheckedAt = now;
    const rules = (await this.store.listRules()).filter((s) => s.enabled && eventsOf(s.rule).includes("key-rotated"));
    if (rules.length === 0) return;
    let events: TriggerEvent[];
    try {
      events = await rotatedKeys(this.#deps.keys, this.#deps.store, now);
    } catch (err) {
      // key manager unreachable or sealed: the queue keeps running, the next look catches up
      this.#deps.logger.warn({ err: codeOf(err) }, "trigger key watch: cannot list keys");
      return;
    }
    for (const event of events) {
      const fired = rules.filter((s) => matches(s.rule.conditions, event, { groups: [] })).map((s) => s.rule.name);
      if (fired.length > 0) await this.store.enqueue(fired, event, now);
    }
  }

  /** Runs the remaining steps of one claimed execution; leaves it done, pending (retry later) or dead. */
  async #run(e: Execution): Promise<void> {
    const stored = await this.store.getRule(e.rule);
    if (!stored) return this.#finish(e, "dead", "NOT_FOUND", "rule was removed");
    const rule = stored.rule;
    const owner = await this.#deps.store.getUser(rule.owner);
    if (!owner) return this.#finish(e, "dead", "NOT_FOUND", `owner ${rule.owner} no longer exists`);
    let secrets: Awaited<ReturnType<TriggerStore["ruleSecrets"]>>;
    let session: VfsSession;
    try {
      // both may need the key manager (the events key, the owner's home): when it is down, retry like a failed step
      secrets = await this.store.ruleSecrets(rule.name);
      session = await this.#deps.openSession(rule.owner, {
        protocol: "trigger",
        sessionId: e.id,
        jobUser: `${TRIGGER_USER_PREFIX}${rule.name}`,
      });
    } catch (err) {
      return this.#failed(e, rule, "engine", err);
    }
    const fs = new OwnerFs(session, owner.home);
    const signal = this.#abort.signal;
    try {
      while (e.step < rule.actions.length) {
        if (signal.aborted) return this.#finish(e, "pending", e.errorCode, undefined);
        const action = rule.actions[e.step];
        const ctx: ActionContext = {
          rule,
          action,
          event: e.data.event,
          executionId: e.id,
          attempt: e.attempts + 1,
          current: e.data.current,
          secrets: secrets[e.step] ?? {},
          fs,
          pgp: this.#deps.pgp?.(),
          now: this.#now,
          logger: this.#deps.logger,
          signal,
        };
        try {
          const result = await RUNNERS[action.type](ctx);
          if (result.current !== undefined) e.data.current = result.current ?? undefined;
          this.#log(e, action.type, true, result.detail);
          e.step++;
          e.attempts = 0;
          e.errorCode = null;
          if (e.step < rule.actions.length) await this.store.save(e);
        } catch (err) {
          // stopping: the step was cut short, not failed; it reruns after the next start
          if (signal.aborted) return this.#finish(e, "pending", e.errorCode, undefined);
          return this.#failed(e, rule, action.type, err);
        }
      }
      return this.#finish(e, "done", null, undefined);
    } finally {
      await session.close();
    }
  }

  /** Counts a failed attempt of the current step: retried after a backoff, or a dead letter. */
  #failed(e: Execution, rule: Rule, type: string, err: unknown): Promise<void> {
    e.attempts++;
    const code = codeOf(err);
    this.#log(e, type, false, (err as Error)?.message ?? String(err));
    const dead = PERMANENT.has(code) || e.attempts >= rule.retry.attempts;
    if (!dead) e.dueAt = this.#now() + backoffMs(rule.retry, e.attempts);
    this.#deps.logger.warn(
      { rule: rule.name, execution: e.id, step: e.step, action: type, attempt: e.attempts, code, dead },
      dead ? "trigger action failed: dead letter" : "trigger action failed: will retry",
    );
    return this.#finish(e, dead ? "dead" : "pending", code, undefined);
  }

  #log(e: Execution, type: string, ok: boolean, detail: string): void {
    e.data.log.push({ step: e.step, type, at: new Date(this.#now()).toISOString(), ok, detail, attempt: e.attempts });
    if (e.data.log.length > MAX_LOG) e.data.log.splice(0, e.data.log.length - MAX_LOG);
  }

  async #finish(e: Execution, state: Execution["state"], code: string | null, note: string | undefined): Promise<void> {
    if (note) this.#log(e, "engine", false, note);
    e.state = state;
    e.errorCode = code;
    await this.store.save(e);
  }

  /** Stops the worker (running actions are aborted and resume after the next start) and waits for the intake. */
  async close(): Promise<void> {
    this.#unsubscribe();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#abort.abort();
    await Promise.allSettled([...this.#intake, ...this.#running.values()]);
    this.#started = false;
  }
}
