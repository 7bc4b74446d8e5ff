// Bounded floating garbage for the server process. Every byte a transfer moves passes through short-lived Buffers
// (ssh2 allocates one per SSH packet each way, 32 KiB; the doors and the container copy out of them), so a transfer
// of 1 GiB creates about 2 GiB of ArrayBuffer garbage. V8 frees a dead Buffer's memory only when a garbage collection
// finds it dead, and left to itself (a 16 MiB young generation, collections paced by JS heap allocation, which is
// small next to the external memory) it let up to ~130 MB of dead Buffers pile up over an idle server's RSS.
// This check runs every PERIOD_MS: when the memory held by ArrayBuffers has grown by GROWTH_BYTES since the last
// collection, it runs a minor (young-generation) GC, which frees the dead Buffers of the last few milliseconds. An idle
// server never collects; a transfer costs a minor GC per ~16 MB moved (well under 1 ms each: what is young is
// nearly all dead). It watches `external`, which holds `arrayBuffers` and also the buffers the seal worker allocated
// and transferred here (its sealed outputs, its decrypted windows): those are not in `arrayBuffers`, and left to V8
// they piled up to ~65 MB during an awscli multipart GET.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

const PERIOD_MS = 20;
const GROWTH_BYTES = 16 * 1024 * 1024;

type Gc = (options: { type: "minor" | "major"; execution: "sync" | "async" }) => void;

/** Starts the pacing (idempotent); returns a stop function. Without a usable gc() it does nothing. */
export function startGcPacing(): () => void {
  let gc: Gc;
  try {
    // --expose-gc set at run time takes effect for contexts created afterwards: a fresh one hands out gc().
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc") as Gc;
  } catch {
    return () => {};
  }
  if (typeof gc !== "function") return () => {};
  let base = process.memoryUsage().external;
  const timer = setInterval(() => {
    const now = process.memoryUsage().external;
    if (now - base < GROWTH_BYTES) {
      if (now < base) base = now;
      return;
    }
    gc({ type: "minor", execution: "sync" });
    base = process.memoryUsage().external;
  }, PERIOD_MS);
  timer.unref();
  return () => clearInterval(timer);
}
