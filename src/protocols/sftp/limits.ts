// Resource limits of the SFTP door, so that neither a crowd of silent sockets nor one user can take the process away
// from everyone else (issue 11 items 5 and 6):
// - before authentication: a login grace time, OpenSSH's MaxStartups (random early drop of unauthenticated
//   connections) and per-source-IP limits;
// - after: connections per user, channels per connection, open files per session and per user, buffered WRITE bytes
//   per handle, per connection and in total, and a reserve of file descriptors that new files never take, so that
//   logins and the audit log keep working when a user opens everything it may.
import { readdirSync, readFileSync } from "node:fs";
import { AtrestError } from "../../errors.ts";

export interface MaxStartups {
  /** Unauthenticated connections accepted without question. */
  start: number;
  /** Percent of new connections dropped once `start` are unauthenticated, rising linearly to 100 at `full`. */
  rate: number;
  /** From this many unauthenticated connections on, every new one is dropped. */
  full: number;
}

export interface SftpLimits {
  /** Seconds a connection has to authenticate (OpenSSH LoginGraceTime); 0 = no limit. */
  loginGraceSeconds: number;
  maxStartups: MaxStartups;
  /** Unauthenticated connections per source IP (OpenSSH PerSourceMaxStartups); 0 = no limit. */
  maxStartupsPerSource: number;
  /** Connections per source IP, authenticated or not; 0 = no limit. */
  maxConnectionsPerSource: number;
  /** Logged-in connections per user; 0 = no limit. */
  maxConnectionsPerUser: number;
  /** Session channels per connection (OpenSSH MaxSessions). */
  maxChannelsPerConnection: number;
  /** Open handles (files and directories) per SFTP session. */
  maxHandlesPerSession: number;
  /** Open files per user over all connections; 0 = no limit. */
  maxFilesPerUser: number;
  /** Out-of-order WRITE bytes held for one handle until the gap fills; more is refused with FAILURE. */
  reorderBytesPerHandle: number;
  /** Out-of-order WRITE bytes held per connection; more is refused with FAILURE. */
  reorderBytesPerConnection: number;
  /** Out-of-order WRITE bytes held by the whole server; more is refused with FAILURE. */
  reorderBytesTotal: number;
  /** In-order WRITE bytes waiting for the encryptor per connection before the door stops reading that connection. */
  queuedBytesPerConnection: number;
  /** In-order WRITE bytes waiting in the whole server before the door stops reading every uploading connection. */
  queuedBytesTotal: number;
  /** File descriptors kept free: new files are refused above limit - reserve, new connections above limit - reserve/2. */
  fdReserve: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_LIMITS: SftpLimits = {
  loginGraceSeconds: 120,
  maxStartups: { start: 32, rate: 30, full: 128 },
  maxStartupsPerSource: 8,
  maxConnectionsPerSource: 64,
  maxConnectionsPerUser: 32,
  maxChannelsPerConnection: 10,
  maxHandlesPerSession: 256,
  maxFilesPerUser: 1024,
  reorderBytesPerHandle: 16 * MiB,
  reorderBytesPerConnection: 32 * MiB,
  reorderBytesTotal: 256 * MiB,
  queuedBytesPerConnection: 16 * MiB,
  // Counted in WRITE payload; the SSH packets the queued slices keep alive are about twice that (a 32 KiB WRITE
  // straddles two channel messages): 64 MiB held ~124 MB with 100 uploads at once. An OpenSSH client keeps at most
  // 64 WRITEs (2 MiB) outstanding per file, so a few uploads never reach this; it bounds many at once.
  queuedBytesTotal: 16 * MiB,
  // the blob store keeps up to 256 shard directories open (local-blobs.ts) besides the audit log and the database
  fdReserve: 512,
};

/** Parses OpenSSH's `start:rate:full` (or a single `n` = n:100:n). */
export function parseMaxStartups(text: string): MaxStartups {
  const parts = text.trim().split(":");
  const nums = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : Number.NaN));
  if (nums.some((n) => !Number.isSafeInteger(n))) throw new AtrestError("INVALID_INPUT", "must be start:rate:full");
  if (nums.length === 1) return { start: nums[0], rate: 100, full: nums[0] };
  if (nums.length !== 3) throw new AtrestError("INVALID_INPUT", "must be start:rate:full (e.g. 10:30:100)");
  const [start, rate, full] = nums;
  if (start < 1 || rate > 100 || full < start) {
    throw new AtrestError("INVALID_INPUT", "needs 1 <= start <= full and rate <= 100 (e.g. 10:30:100)");
  }
  return { start, rate, full };
}

/** OpenSSH's drop decision for a new connection when `unauthenticated` are waiting already. */
export function dropStartup(m: MaxStartups, unauthenticated: number, random: () => number = Math.random): boolean {
  if (unauthenticated >= m.full) return true;
  if (unauthenticated < m.start) return false;
  const p = m.rate + ((100 - m.rate) * (unauthenticated - m.start)) / Math.max(1, m.full - m.start);
  return random() * 100 < p;
}

export function limitError(message: string): AtrestError {
  return new AtrestError("LIMIT_EXCEEDED", message);
}

/** The soft limit on open files of this process (Linux /proc), or undefined where it cannot be read. */
export function fdLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (!m || m[1] === "unlimited") return undefined;
    return Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * Counts this process's open file descriptors (/proc/self/fd) at most every `sampleMs`; between samples, what the
 * door opened since and the opens still in progress (admitted, descriptor not there yet) are added, so a burst of
 * opens cannot overshoot the limit between two samples.
 */
export class FdGuard {
  readonly limit: number | undefined;
  readonly reserve: number;
  readonly #sampleMs: number;
  #sampled = 0;
  #at = -Infinity;
  #since = 0;
  #pending = 0;

  constructor(reserve: number, limit = fdLimit(), sampleMs = 200) {
    this.limit = limit;
    this.reserve = limit === undefined ? 0 : Math.min(reserve, Math.floor(limit / 2));
    this.#sampleMs = sampleMs;
  }

  /** Descriptors in use now (an estimate between samples, never an underestimate of what we opened). */
  inUse(): number {
    const now = performance.now();
    if (now - this.#at >= this.#sampleMs) {
      try {
        this.#sampled = readdirSync("/proc/self/fd").length;
      } catch {
        this.#sampled = 0;
      }
      this.#at = now;
      this.#since = 0;
    }
    return this.#sampled + this.#pending + this.#since;
  }

  /** Notes `n` descriptors just opened (a sample taken before now does not count them). */
  opened(n = 1): void {
    this.#since += n;
  }

  /** An open is admitted; `end` is called once it has settled (its descriptor, if any, exists by then). */
  begin(): () => void {
    this.#pending++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#pending--;
      this.#since++;
    };
  }

  /** Whether a new file may be opened: the reserve stays free for logins and the audit log. */
  fileAllowed(): boolean {
    return this.limit === undefined || this.inUse() < this.limit - this.reserve;
  }

  /** Whether a new connection may be accepted: half the reserve stays free for the audit log and files in flight. */
  connectionAllowed(): boolean {
    return this.limit === undefined || this.inUse() < this.limit - Math.floor(this.reserve / 2);
  }
}

/** Bytes held at one level (a connection, the server) against a bound; listeners run when it drops below. */
export class ByteGauge {
  readonly bound: number;
  bytes = 0;
  readonly #parent: ByteGauge | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(bound: number, parent?: ByteGauge) {
    this.bound = bound;
    this.#parent = parent;
  }

  /** This level or a parent is at or over its bound. */
  get full(): boolean {
    return this.bytes >= this.bound || (this.#parent?.full ?? false);
  }

  /** Adds `n` unless that would pass this level's or a parent's bound; returns whether it did. */
  tryAdd(n: number): boolean {
    if (this.bytes + n > this.bound || (this.#parent && this.#parent.bytes + n > this.#parent.bound)) return false;
    this.add(n);
    return true;
  }

  add(n: number): void {
    this.bytes += n;
    this.#parent?.add(n);
  }

  remove(n: number): void {
    this.bytes -= n;
    this.#parent?.remove(n);
    if (this.bytes < this.bound && this.#waiters.size > 0) {
      const waiters = [...this.#waiters];
      this.#waiters.clear();
      // each re-checks (whenBelow again): a parent may still be full
      for (const w of waiters) w();
    }
  }

  /** Runs `fn` once this level and its parents are below their bounds (now, if they are). */
  whenBelow(fn: () => void): void {
    if (this.bytes >= this.bound) this.#waiters.add(fn);
    else if (this.#parent?.full) this.#parent.whenBelow(() => this.whenBelow(fn));
    else fn();
  }
}

/** What one upload handle charges its connection for: out-of-order bytes held and in-order bytes queued. */
export interface WriteBudget {
  /** Out-of-order bytes about to be held; false when a bound would be passed (the WRITE is refused). */
  holdReorder(n: number): boolean;
  releaseReorder(n: number): void;
  /** In-order bytes handed on to the encryptor (always accepted: the door stops reading when they pile up). */
  queue(n: number): void;
  dequeue(n: number): void;
  readonly reorderPerHandle: number;
}

/** The budgets of one connection, under the server's totals. */
export class ConnectionBudget implements WriteBudget {
  readonly reorder: ByteGauge;
  readonly queued: ByteGauge;
  readonly reorderPerHandle: number;

  constructor(limits: SftpLimits, totals: { reorder: ByteGauge; queued: ByteGauge }) {
    this.reorder = new ByteGauge(limits.reorderBytesPerConnection, totals.reorder);
    this.queued = new ByteGauge(limits.queuedBytesPerConnection, totals.queued);
    this.reorderPerHandle = limits.reorderBytesPerHandle;
  }

  holdReorder(n: number): boolean {
    return this.reorder.tryAdd(n);
  }
  releaseReorder(n: number): void {
    this.reorder.remove(n);
  }
  queue(n: number): void {
    this.queued.add(n);
  }
  dequeue(n: number): void {
    this.queued.remove(n);
  }
}

/** Open files of one session, checked against the user's total and the fd reserve before anything is opened. */
export interface FileSlots {
  /**
   * Takes a slot or throws LIMIT_EXCEEDED. The caller calls the returned function once the open has settled, and
   * release() once the file is closed (or the open failed).
   */
  acquire(): () => void;
  release(): void;
}

/** Per-user open-file counts shared by every connection of the server. */
export class UserFiles {
  readonly #counts = new Map<string, number>();
  readonly #max: number;
  readonly #fds: FdGuard;

  constructor(max: number, fds: FdGuard) {
    this.#max = max;
    this.#fds = fds;
  }

  count(user: string): number {
    return this.#counts.get(user) ?? 0;
  }

  slotsFor(user: string): FileSlots {
    return {
      acquire: () => {
        const n = this.count(user);
        if (this.#max > 0 && n >= this.#max) throw limitError(`too many open files for this user (${this.#max})`);
        if (!this.#fds.fileAllowed()) throw limitError("server busy: too many open files, try again later");
        this.#counts.set(user, n + 1);
        // an upload holds its temp file, a download its blob: one descriptor each
        return this.#fds.begin();
      },
      release: () => {
        const n = this.count(user) - 1;
        if (n > 0) this.#counts.set(user, n);
        else this.#counts.delete(user);
      },
    };
  }
}
