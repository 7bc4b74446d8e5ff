// Runs KmsService.runScheduled() periodically: automatic rotation when a key's cryptoperiod has elapsed, destruction
// when a scheduled deletion's waiting period has ended, and completion of approved requests interrupted by a crash.
// Everything it acts on is derived from timestamps in kms.db, so a restart (or a KMS that was down when something
// fell due) simply catches up on the next pass. Several processes may run it on one database: each step re-checks
// under the write lock.

import type { ScheduledRun } from "./approved-requests.ts";
import type { KmsService } from "./service.ts";

export const DEFAULT_SCHEDULER_INTERVAL_MS = 60_000;

export class KmsScheduler {
  readonly #service: KmsService;
  readonly #onError: (err: unknown) => void;
  readonly #onRun: (run: ScheduledRun) => void;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    service: KmsService,
    options: { onError?: (err: unknown) => void; onRun?: (run: ScheduledRun) => void } = {},
  ) {
    this.#service = service;
    this.#onError = options.onError ?? (() => {});
    this.#onRun = options.onRun ?? (() => {});
  }

  /** One pass now; errors go to onError (a scheduler must outlive a transient failure such as a busy database). */
  tick(): ScheduledRun | undefined {
    try {
      const run = this.#service.runScheduled();
      if (run.rotated.length || run.destroyed.length || run.executed.length || run.secretsDue?.length) this.#onRun(run);
      return run;
    } catch (err) {
      this.#onError(err);
      return undefined;
    }
  }

  /** Runs a pass at once and then every `intervalMs`; the timer does not keep the process alive. */
  start(intervalMs = DEFAULT_SCHEDULER_INTERVAL_MS): this {
    this.stop();
    this.tick();
    this.#timer = setInterval(() => this.tick(), intervalMs);
    this.#timer.unref();
    return this;
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
