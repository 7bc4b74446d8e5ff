// AES-256-GCM sealing and opening into caller-owned buffers, through OpenSSL's EVP AEAD interface (the OpenSSL that
// the Node binary links and exports; nothing cryptographic is implemented here). Built by scripts/build-gcm-binding.ts
// and loaded by src/crypto/gcm-native.ts, which falls back to node:crypto when it is absent.
//
// Why: node:crypto's cipher.update() allocates its output, then (for GCM, whose block size is 1) allocates a second,
// zero-filled buffer one byte shorter and copies into it, and the caller copies again into its own output. Here one
// context per key keeps the AES key schedule and GHASH tables (set up once, as for a KeyObject), each message only
// sets a fresh nonce, and the ciphertext is written where the caller wants it.
//
// The wire shape is aead.ts's: nonce (12) || ciphertext || tag (16). The nonce is always the caller's (fresh from the
// CSPRNG): this file never makes or changes one. Contexts are freed (and their key schedules cleansed by
// EVP_CIPHER_CTX_free) when the JS handle is collected; the raw key is never stored here.
#include <node_api.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LENGTH 32
#define NONCE_LENGTH 12
#define TAG_LENGTH 16

typedef struct {
  EVP_CIPHER_CTX* enc;
  EVP_CIPHER_CTX* dec;
} Gcm;

static void gcm_free(Gcm* g) {
  if (g == NULL) return;
  EVP_CIPHER_CTX_free(g->enc);
  EVP_CIPHER_CTX_free(g->dec);
  free(g);
}

static void gcm_finalize(napi_env env, void* data, void* hint) {
  (void)env;
  (void)hint;
  gcm_free((Gcm*)data);
}

static napi_value throw_error(napi_env env, const char* message) {
  napi_throw_error(env, "ATREST_GCM", message);
  return NULL;
}

// Bytes of a Uint8Array (a Buffer or a view), already offset by its byteOffset.
static int bytes_of(napi_env env, napi_value value, unsigned char** data, size_t* length) {
  bool is_typed = false;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed) return 0;
  napi_typedarray_type type;
  void* ptr = NULL;
  if (napi_get_typedarray_info(env, value, &type, length, &ptr, NULL, NULL) != napi_ok) return 0;
  if (type != napi_uint8_array) return 0;
  *data = (unsigned char*)ptr;
  return 1;
}

static int index_of(napi_env env, napi_value value, size_t* out) {
  double v = 0;
  if (napi_get_value_double(env, value, &v) != napi_ok || !(v >= 0) || v > 9007199254740991.0 || v != (double)(size_t)v)
    return 0;
  *out = (size_t)v;
  return 1;
}

static Gcm* gcm_of(napi_env env, napi_value value) {
  void* data = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external) return NULL;
  if (napi_get_value_external(env, value, &data) != napi_ok) return NULL;
  return (Gcm*)data;
}

// create(key: Uint8Array(32)) -> handle. The caller zeroes its key bytes afterwards.
static napi_value create(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1) return throw_error(env, "create(key)");
  unsigned char* key;
  size_t key_length;
  if (!bytes_of(env, argv[0], &key, &key_length) || key_length != KEY_LENGTH)
    return throw_error(env, "AES-256-GCM key must be 32 bytes");
  Gcm* g = calloc(1, sizeof(Gcm));
  if (g == NULL) return throw_error(env, "out of memory");
  g->enc = EVP_CIPHER_CTX_new();
  g->dec = EVP_CIPHER_CTX_new();
  const EVP_CIPHER* cipher = EVP_aes_256_gcm();
  if (g->enc == NULL || g->dec == NULL || EVP_EncryptInit_ex(g->enc, cipher, NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_SET_IVLEN, NONCE_LENGTH, NULL) != 1 ||
      EVP_EncryptInit_ex(g->enc, NULL, NULL, key, NULL) != 1 ||
      EVP_DecryptInit_ex(g->dec, cipher, NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_IVLEN, NONCE_LENGTH, NULL) != 1 ||
      EVP_DecryptInit_ex(g->dec, NULL, NULL, key, NULL) != 1) {
    gcm_free(g);
    return throw_error(env, "OpenSSL could not set up AES-256-GCM");
  }
  napi_value handle;
  if (napi_create_external(env, g, gcm_finalize, NULL, &handle) != napi_ok) {
    gcm_free(g);
    return throw_error(env, "could not create the handle");
  }
  return handle;
}

// seal(handle, nonce(12), aad, plaintext, out, at): writes nonce || ciphertext || tag at out[at..].
static napi_value seal(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) return throw_error(env, "seal(handle, nonce, aad, plaintext, out, at)");
  Gcm* g = gcm_of(env, argv[0]);
  unsigned char *nonce, *aad, *plain, *out;
  size_t nonce_length, aad_length, plain_length, out_length, at;
  if (g == NULL || !bytes_of(env, argv[1], &nonce, &nonce_length) || !bytes_of(env, argv[2], &aad, &aad_length) ||
      !bytes_of(env, argv[3], &plain, &plain_length) || !bytes_of(env, argv[4], &out, &out_length) ||
      !index_of(env, argv[5], &at))
    return throw_error(env, "seal: bad arguments");
  if (nonce_length != NONCE_LENGTH) return throw_error(env, "nonce must be 12 bytes");
  if (plain_length > 0x7fffffff - NONCE_LENGTH - TAG_LENGTH || aad_length > 0x7fffffff || at > out_length ||
      out_length - at < plain_length + NONCE_LENGTH + TAG_LENGTH)
    return throw_error(env, "output too small");
  unsigned char* body = out + at + NONCE_LENGTH;
  // The output must not overlap the plaintext unless it is exactly in place (OpenSSL's rule for EVP updates).
  if (body != plain && body < plain + plain_length && plain < body + plain_length + TAG_LENGTH)
    return throw_error(env, "output overlaps the plaintext");
  memmove(out + at, nonce, NONCE_LENGTH);
  // GCM's final writes nothing; a scratch block keeps OpenSSL off the caller's buffer all the same.
  unsigned char scratch[16];
  int n = 0;
  int ok = EVP_EncryptInit_ex(g->enc, NULL, NULL, NULL, nonce) == 1 &&
           (aad_length == 0 || EVP_EncryptUpdate(g->enc, NULL, &n, aad, (int)aad_length) == 1) &&
           (plain_length == 0 || EVP_EncryptUpdate(g->enc, body, &n, plain, (int)plain_length) == 1) &&
           (plain_length == 0 || (size_t)n == plain_length) &&
           EVP_EncryptFinal_ex(g->enc, scratch, &n) == 1 && n == 0 &&
           EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_GET_TAG, TAG_LENGTH, body + plain_length) == 1;
  if (!ok) {
    OPENSSL_cleanse(out + at, plain_length + NONCE_LENGTH + TAG_LENGTH);
    return throw_error(env, "AES-256-GCM encryption failed");
  }
  return NULL;
}

// open(handle, sealed, aad, out, at) -> boolean: decrypts nonce || ciphertext || tag into out[at..] and checks the
// tag; on a mismatch what was decrypted is cleansed and false is returned (the caller throws IntegrityError).
static napi_value open_sealed(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) return throw_error(env, "open(handle, sealed, aad, out, at)");
  Gcm* g = gcm_of(env, argv[0]);
  unsigned char *sealed, *aad, *out;
  size_t sealed_length, aad_length, out_length, at;
  if (g == NULL || !bytes_of(env, argv[1], &sealed, &sealed_length) || !bytes_of(env, argv[2], &aad, &aad_length) ||
      !bytes_of(env, argv[3], &out, &out_length) || !index_of(env, argv[4], &at))
    return throw_error(env, "open: bad arguments");
  if (sealed_length < NONCE_LENGTH + TAG_LENGTH || sealed_length > 0x7fffffff || aad_length > 0x7fffffff)
    return throw_error(env, "bad sealed length");
  size_t length = sealed_length - NONCE_LENGTH - TAG_LENGTH;
  if (at > out_length || out_length - at < length) return throw_error(env, "output too small");
  const unsigned char* body = sealed + NONCE_LENGTH;
  unsigned char* dest = out + at;
  if (dest != body && dest < body + length && body < dest + length) return throw_error(env, "output overlaps the input");
  unsigned char tag[TAG_LENGTH], scratch[16];
  memcpy(tag, body + length, TAG_LENGTH);
  int n = 0;
  int set = EVP_DecryptInit_ex(g->dec, NULL, NULL, NULL, sealed) == 1 &&
            EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_TAG, TAG_LENGTH, tag) == 1 &&
            (aad_length == 0 || EVP_DecryptUpdate(g->dec, NULL, &n, aad, (int)aad_length) == 1) &&
            (length == 0 || EVP_DecryptUpdate(g->dec, dest, &n, body, (int)length) == 1) &&
            (length == 0 || (size_t)n == length);
  int verified = set && EVP_DecryptFinal_ex(g->dec, scratch, &n) == 1 && n == 0;
  napi_value result;
  if (!verified) OPENSSL_cleanse(dest, length);
  if (!set) return throw_error(env, "AES-256-GCM decryption failed");
  napi_get_boolean(env, verified, &result);
  return result;
}

// pageOffset(bytes: Uint8Array) -> the address of bytes[0] modulo 4096. Not crypto: the local blob store's O_DIRECT
// writes need block-aligned memory and JS cannot see where an ArrayBuffer lives (its backing store never moves).
static napi_value page_offset(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) return throw_error(env, "bad arguments");
  unsigned char* data = NULL;
  size_t length = 0;
  if (!bytes_of(env, argv[0], &data, &length)) return throw_error(env, "expected a Uint8Array");
  napi_value result;
  napi_create_uint32(env, (uint32_t)((uintptr_t)data & 4095), &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"create", NULL, create, NULL, NULL, NULL, napi_default, NULL},
      {"seal", NULL, seal, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, open_sealed, NULL, NULL, NULL, napi_default, NULL},
      {"pageOffset", NULL, page_offset, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}
