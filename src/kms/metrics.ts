// The key manager's Prometheus metrics: requests and latency per operation and outcome, batch sizes, seal state and
// the age of each key's current version (for cryptoperiod alerts). Labels are bounded: `op` is a route name,
// `outcome` is "success" or an error code, `key` a KEK name. Never a context, a client secret or key material.

import { Registry } from "../metrics/registry.ts";

/** Latency buckets (seconds): a KMS call is tens of microseconds to a few milliseconds. */
const BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

export interface KeyAge {
  name: string;
  /** ISO time the current version was created. */
  currentSince: string;
}

export interface SealGauge {
  sealed: boolean;
  progress: number;
  threshold: number;
}

export class KmsMetrics {
  readonly registry = new Registry();
  readonly #requests = this.registry.counter(
    "atrest_kms_requests_total",
    "KMS API requests by operation and outcome (success or an error code)",
    ["op", "outcome"],
  );
  readonly #latency = this.registry.histogram(
    "atrest_kms_request_duration_seconds",
    "KMS API request handling time (body read to response), by operation",
    { labelNames: ["op"], buckets: BUCKETS },
  );
  readonly #items = this.registry.counter(
    "atrest_kms_batch_items_total",
    "Items processed in batch requests, by operation",
    ["op"],
  );
  readonly #sealed = this.registry.gauge("atrest_kms_sealed", "1 while the key manager is sealed, else 0");
  readonly #progress = this.registry.gauge("atrest_kms_unseal_progress", "Unseal shares submitted so far");
  readonly #threshold = this.registry.gauge("atrest_kms_unseal_threshold", "Unseal shares needed (0 = dev mode)");
  readonly #keyAge = this.registry.gauge(
    "atrest_kms_key_age_seconds",
    "Seconds since the current version of each key was created (unsealed only)",
    ["key"],
  );
  readonly #up = this.registry.gauge("atrest_kms_start_time_seconds", "Unix time the key manager process started");
  #known = new Set<string>();

  constructor(seal: () => SealGauge, keys: () => readonly KeyAge[], now: () => number = Date.now) {
    this.#up.set(undefined, Math.floor(now() / 1000));
    this.registry.onCollect(() => {
      const s = seal();
      this.#sealed.set(undefined, s.sealed ? 1 : 0);
      this.#progress.set(undefined, s.progress);
      this.#threshold.set(undefined, s.threshold);
      const list = s.sealed ? [] : keys();
      const seen = new Set<string>();
      const t = now();
      for (const k of list) {
        seen.add(k.name);
        this.#keyAge.set({ key: k.name }, Math.max(0, Math.round((t - Date.parse(k.currentSince)) / 1000)));
      }
      for (const name of this.#known) if (!seen.has(name)) this.#keyAge.remove({ key: name });
      this.#known = seen;
    });
  }

  observe(op: string, outcome: string, seconds: number, items = 0): void {
    this.#requests.inc({ op, outcome });
    this.#latency.observe({ op }, seconds);
    if (items > 0) this.#items.inc({ op }, items);
  }

  render(): string {
    return this.registry.render();
  }
}
