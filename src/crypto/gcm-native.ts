// atrest's AES-256-GCM binding (native/gcm/gcm.c: OpenSSL's EVP AEAD calls, built by scripts/build-gcm-binding.ts at
// npm install): seals and opens into the caller's buffer with one OpenSSL context per key. node:crypto allocates every
// update's output twice and copies it (the GCM block size of 1 makes its output one byte short of what it allocated),
// so container segments sealed 2.3x faster through the binding (64 KiB: 17.6 against 43.1 µs CPU, load 7). Absent
// (not built) or switched off with ATREST_CONTAINER_CRYPTO=js, callers use node:crypto: the same bytes either way.
import { createCipheriv, type KeyObject, randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { zero } from "./bytes.ts";

/** An OpenSSL AES-256-GCM context pair for one key; freed (key schedule cleansed) when collected. */
export type GcmHandle = { readonly __brand: "GcmHandle" };

interface Binding {
  create(key: Uint8Array): GcmHandle;
  /** nonce ‖ ciphertext ‖ tag of `plaintext` at out[at..]. */
  seal(handle: GcmHandle, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array, out: Uint8Array, at: number): void;
  /** Plaintext of `sealed` (nonce ‖ ciphertext ‖ tag) at out[at..]; false (and that output cleansed) on a bad tag. */
  open(handle: GcmHandle, sealed: Uint8Array, aad: Uint8Array, out: Uint8Array, at: number): boolean;
  /** The address of bytes[0] modulo 4096 (absent from bindings built before it). */
  pageOffset?(bytes: Uint8Array): number;
}

/** Where scripts/build-gcm-binding.ts puts the binding, from the repository root. */
export const GCM_BINDING_PATH = "native/gcm/build/Release/atrest_gcm.node";

function load(): { binding: Binding | undefined; reason: string } {
  if (process.env.ATREST_CONTAINER_CRYPTO === "js") return { binding: undefined, reason: "ATREST_CONTAINER_CRYPTO=js" };
  try {
    const binding = createRequire(import.meta.url)(`../../${GCM_BINDING_PATH}`) as Binding;
    if (typeof binding.create !== "function" || typeof binding.seal !== "function") {
      return { binding: undefined, reason: "binding without create/seal" };
    }
    const wrong = selfCheck(binding);
    return wrong ? { binding: undefined, reason: `disagrees with node:crypto (${wrong})` } : { binding, reason: "" };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { binding: undefined, reason: code === "MODULE_NOT_FOUND" ? "not built" : (err as Error).message };
  }
}

/**
 * Seals random messages (empty, one byte, 1000 bytes, at an offset) with the binding and with node:crypto and
 * compares, opens them, and checks that a flipped bit is refused: a binding built wrong is never used (as
 * ssh2's binding once broke one of its ciphers). What failed, or "" when all agree.
 */
function selfCheck(binding: Binding): string {
  const key = randomBytes(32);
  const handle = binding.create(key);
  try {
    for (const length of [0, 1, 1000]) {
      const nonce = randomBytes(12);
      const aad = randomBytes(length % 61);
      const plain = randomBytes(length);
      const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: 16 });
      cipher.setAAD(aad);
      const expected = Buffer.concat([nonce, cipher.update(plain), cipher.final(), cipher.getAuthTag()]);
      const out = Buffer.alloc(expected.length + 5);
      binding.seal(handle, nonce, aad, plain, out, 5);
      if (!out.subarray(5).equals(expected)) return `seal of ${length} bytes`;
      const back = Buffer.alloc(length + 3);
      if (!binding.open(handle, expected, aad, back, 3) || !back.subarray(3).equals(plain)) {
        return `open of ${length} bytes`;
      }
      expected[expected.length - 1 - (length % 16)] ^= 1;
      if (binding.open(handle, expected, aad, back, 3)) return `a tampered ${length}-byte message was accepted`;
    }
    return "";
  } finally {
    zero(key);
  }
}

const loaded = load();
export const gcmBinding: Binding | undefined = loaded.binding;

/** For the server's start line: which AES-GCM implementation seals container segments. */
export function containerCrypto(): { native: boolean; describe: string } {
  return loaded.binding
    ? { native: true, describe: "native (OpenSSL EVP through atrest's binding)" }
    : { native: false, describe: `node:crypto (atrest's GCM binding not loaded: ${loaded.reason})` };
}

// One context per KeyObject, made on first use: the key bytes are exported for OpenSSL's key setup and zeroed at
// once. Dropped with the KeyObject (a worker's copy of a posted KeyObject is a KeyObject of its own).
const handles = new WeakMap<KeyObject, GcmHandle>();

/** The binding's context for `key`, or undefined when the binding is not loaded. */
export function gcmHandle(key: KeyObject): GcmHandle | undefined {
  const binding = gcmBinding;
  if (binding === undefined) return undefined;
  let handle = handles.get(key);
  if (handle === undefined) {
    const raw = key.export();
    try {
      handle = binding.create(raw);
    } finally {
      zero(raw);
    }
    handles.set(key, handle);
  }
  return handle;
}

/**
 * Where `bytes` starts within its memory page (address modulo 4096), or undefined without the binding: the local blob
 * store aligns its O_DIRECT staging buffers with it (store/direct-io.ts). It lives in this binding because it is
 * the one native module atrest builds.
 */
export function pageOffset(bytes: Uint8Array): number | undefined {
  return gcmBinding?.pageOffset?.(bytes);
}
