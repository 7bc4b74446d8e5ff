// What a benchmark module looks like to bench/run.ts.

export interface BenchContext {
  /** Smaller sizes, one run each. */
  quick: boolean;
  /** Runs per workload (best of). */
  runs: number;
  /** Scratch dir for this module (under the run's atrest-bench-* dir). */
  tmp: string;
  /** Repository root (where src/ lives). */
  root: string;
  /** Harness self-test: a second OpenSSH sshd stands in for atrest. */
  selfTest: boolean;
  /** Write a CPU profile of the server under test (`node --cpu-prof`) into the repository's .cache/profiles/. */
  profile: boolean;
  log(message: string): void;
}

export interface BenchSection {
  /** Markdown table: first row is the header. */
  table: string[][];
  /** Bullets printed under the table (skips, targets, caveats). */
  notes: string[];
  /** One-line results printed at the end of the run. */
  summary: string[];
}

export interface BenchModule {
  name: string;
  title: string;
  /** Bullets for the method section of docs/benchmarks.md. */
  method: string[];
  run(ctx: BenchContext): Promise<BenchSection>;
}
