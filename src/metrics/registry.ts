// A small metrics registry rendered in the Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/): `# HELP` / `# TYPE` once per family, one sample per
// line, label values escaped (`\` `"` and newline), HELP escaped (`\` and newline), floats as Go prints them
// (`+Inf`, `-Inf`, `NaN`). Histograms expose cumulative `_bucket{le="…"}` series ending in `le="+Inf"`, then `_sum`
// and `_count`. Used by the file server's /metrics (audit pipeline) and by the key manager's /metrics.

export type Labels = Readonly<Record<string, string | number>>;

/** Content-Type of the exposition served at /metrics. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Default histogram buckets (seconds), the same as the Prometheus client libraries'. */
export const DEFAULT_BUCKETS: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v);
}

export function escapeLabelValue(v: string): string {
  return v.replace(/[\\"\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`));
}

function escapeHelp(v: string): string {
  return v.replace(/[\\\n]/g, (c) => (c === "\n" ? "\\n" : "\\\\"));
}

interface Options {
  help: string;
  labelNames?: readonly string[];
}

abstract class Family {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: "counter" | "gauge" | "histogram";

  constructor(name: string, opts: Options, reserved: readonly string[] = []) {
    if (!METRIC_NAME.test(name)) throw new RangeError(`invalid metric name ${JSON.stringify(name)}`);
    this.name = name;
    this.help = opts.help;
    this.labelNames = opts.labelNames ?? [];
    for (const l of this.labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith("__") || reserved.includes(l)) {
        throw new RangeError(`invalid label name ${JSON.stringify(l)} for ${name}`);
      }
    }
    if (new Set(this.labelNames).size !== this.labelNames.length) throw new RangeError(`duplicate label in ${name}`);
  }

  /** Series key and its rendered `{a="x",b="y"}` part; every declared label must be given, no others. */
  protected key(labels: Labels | undefined): [string, string] {
    const given = labels ?? {};
    const names = Object.keys(given);
    if (names.length !== this.labelNames.length || names.some((n) => !this.labelNames.includes(n))) {
      throw new RangeError(`${this.name} takes labels {${this.labelNames.join(",")}}, got {${names.join(",")}}`);
    }
    const values = this.labelNames.map((n) => String(given[n]));
    const text = this.labelNames.map((n, i) => `${n}="${escapeLabelValue(values[i] as string)}"`).join(",");
    return [values.join("\u0000"), text];
  }

  header(): string {
    return `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
  }

  abstract samples(): string;
}

class Scalar extends Family {
  readonly type: "counter" | "gauge";
  readonly #series = new Map<string, { labels: string; value: number }>();

  constructor(type: "counter" | "gauge", name: string, opts: Options) {
    super(name, opts);
    this.type = type;
  }

  protected add(labels: Labels | undefined, delta: number): void {
    const [k, text] = this.key(labels);
    const s = this.#series.get(k);
    if (s) s.value += delta;
    else this.#series.set(k, { labels: text, value: delta });
  }

  protected put(labels: Labels | undefined, value: number): void {
    const [k, text] = this.key(labels);
    this.#series.set(k, { labels: text, value });
  }

  /** Current value of one series (0 when never touched). */
  get(labels?: Labels): number {
    return this.#series.get(this.key(labels)[0])?.value ?? 0;
  }

  /** Forgets one series (e.g. a destination that was removed). */
  remove(labels?: Labels): void {
    this.#series.delete(this.key(labels)[0]);
  }

  samples(): string {
    let out = "";
    for (const s of this.#series.values()) {
      out += `${this.name}${s.labels ? `{${s.labels}}` : ""} ${formatValue(s.value)}\n`;
    }
    return out;
  }
}

export class Counter extends Scalar {
  constructor(name: string, opts: Options) {
    super("counter", name, opts);
  }

  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0)) throw new RangeError(`counter ${this.name} can only go up (got ${by})`);
    this.add(labels, by);
  }
}

export class Gauge extends Scalar {
  constructor(name: string, opts: Options) {
    super("gauge", name, opts);
  }

  set(labels: Labels | undefined, value: number): void {
    this.put(labels, value);
  }

  inc(labels?: Labels, by = 1): void {
    this.add(labels, by);
  }

  dec(labels?: Labels, by = 1): void {
    this.add(labels, -by);
  }
}

export class Histogram extends Family {
  readonly type = "histogram" as const;
  readonly buckets: readonly number[];
  readonly #series = new Map<string, { labels: string; counts: number[]; sum: number; count: number }>();

  constructor(name: string, opts: Options & { buckets?: readonly number[] }) {
    super(name, opts, ["le"]);
    const b = [...(opts.buckets ?? DEFAULT_BUCKETS)];
    if (b.length === 0 || b.some((x, i) => !Number.isFinite(x) || (i > 0 && x <= (b[i - 1] as number)))) {
      throw new RangeError(`histogram ${name}: buckets must be finite and strictly increasing`);
    }
    this.buckets = b;
  }

  observe(labels: Labels | undefined, value: number): void {
    const [k, text] = this.key(labels);
    let s = this.#series.get(k);
    if (!s) {
      s = { labels: text, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(k, s);
    }
    // Stored per bucket, summed when rendered (observe stays O(log n) and allocation-free).
    let lo = 0;
    let hi = this.buckets.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (value <= (this.buckets[mid] as number)) hi = mid;
      else lo = mid + 1;
    }
    if (lo < this.buckets.length) s.counts[lo] = (s.counts[lo] as number) + 1;
    s.sum += value;
    s.count++;
  }

  /** Starts a timer; calling the result observes the elapsed seconds. */
  startTimer(labels?: Labels): () => number {
    const t0 = performance.now();
    return () => {
      const s = (performance.now() - t0) / 1000;
      this.observe(labels, s);
      return s;
    };
  }

  samples(): string {
    let out = "";
    for (const s of this.#series.values()) {
      const sep = s.labels ? "," : "";
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += s.counts[i] as number;
        out += `${this.name}_bucket{${s.labels}${sep}le="${formatValue(b)}"} ${cumulative}\n`;
      });
      out += `${this.name}_bucket{${s.labels}${sep}le="+Inf"} ${s.count}\n`;
      const braces = s.labels ? `{${s.labels}}` : "";
      out += `${this.name}_sum${braces} ${formatValue(s.sum)}\n${this.name}_count${braces} ${s.count}\n`;
    }
    return out;
  }
}

/** A set of metric families; `render()` is the /metrics body. */
export class Registry {
  readonly #families = new Map<string, Family>();
  readonly #collectors = new Set<() => void>();

  counter(name: string, help: string, labelNames?: readonly string[]): Counter {
    return this.#add(new Counter(name, { help, labelNames }));
  }

  gauge(name: string, help: string, labelNames?: readonly string[]): Gauge {
    return this.#add(new Gauge(name, { help, labelNames }));
  }

  histogram(name: string, help: string, opts: { labelNames?: readonly string[]; buckets?: readonly number[] } = {}) {
    return this.#add(new Histogram(name, { help, ...opts }));
  }

  /** Runs before every render, to refresh gauges that mirror state (backlog, connected, key ages…). */
  onCollect(fn: () => void): () => void {
    this.#collectors.add(fn);
    return () => this.#collectors.delete(fn);
  }

  render(): string {
    for (const fn of this.#collectors) fn();
    let out = "";
    for (const f of this.#families.values()) out += f.header() + f.samples();
    return out;
  }

  #add<F extends Family>(family: F): F {
    if (this.#families.has(family.name)) throw new RangeError(`metric ${family.name} is already registered`);
    this.#families.set(family.name, family);
    return family;
  }
}
