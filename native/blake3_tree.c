/*
 * BLAKE3 subtrees for the whole-file digest (src/hash/tree.ts is the contract's home).
 *
 * BLAKE3 is a tree of 1 KiB chunks: a span of at most 2^k chunks starting at a chunk
 * index that is a multiple of 2^k is one subtree, whose chaining value (CV) depends only
 * on its bytes and its first chunk's index. So the digest of a file can be computed in
 * pieces, on several threads, and merged in order (parents, the last with the ROOT flag).
 * This file adds these to the vendored BLAKE3 1.8.6 C implementation (blake3/,
 * unmodified; included here, not compiled on its own, to reach its static helpers):
 *
 *   blake3Cv(data, length, chunkCounter, out)       CV of data[0, length) as that subtree
 *   blake3Cv(null, length, chunkCounter, out)       the same for `length` zero bytes, without
 *                                                   input: a static zero chunk is read for
 *                                                   every chunk (cache-resident), SIMD-wide
 *   blake3CvAsync(...same...) -> Promise<void>      the same on libuv's thread pool
 *   blake3Parent(left, right, root, out)            a parent node's CV, or with root the
 *                                                   digest (the first 32 output bytes)
 *   blake3HashManyAsync(list, out) -> Promise<void> the ordinary digest (b3sum's) of each
 *                                                   Uint8Array of `list` into out[32 i, 32 i + 32),
 *                                                   on libuv's thread pool, one task for the
 *                                                   list: a server re-hashes received chunks
 *                                                   there (src/hash/digest.ts digestsOfAsync)
 *   blake3Hash(data, out)                           the ordinary digest of data, on this thread
 *                                                   (src/hash/digest.ts digestOf)
 *
 * A CV is never a root: the ROOT flag is only ever set by blake3Parent(..., true) (and
 * a file of one chunk is hashed whole by the caller).
 */
#include "blake3/blake3.c"

#include <stdio.h>
#include <math.h>
#include <node_api.h>
#include <stdlib.h>

#include "blake3_tree.h"

static const uint8_t ZERO_CHUNK[BLAKE3_CHUNK_LEN] = {0};

/* compress_chunks_parallel for zeros: every full chunk reads ZERO_CHUNK. */
static size_t zero_chunks_parallel(size_t input_len, uint64_t chunk_counter, uint8_t *out) {
  const uint8_t *chunks_array[MAX_SIMD_DEGREE];
  size_t n = 0;
  size_t position = 0;
  while (input_len - position >= BLAKE3_CHUNK_LEN) {
    chunks_array[n++] = ZERO_CHUNK;
    position += BLAKE3_CHUNK_LEN;
  }
  blake3_hash_many(chunks_array, n, BLAKE3_CHUNK_LEN / BLAKE3_BLOCK_LEN, IV, chunk_counter, true, 0, CHUNK_START, CHUNK_END, out);
  if (input_len > position) {
    blake3_chunk_state cs;
    chunk_state_init(&cs, IV, 0);
    cs.chunk_counter = chunk_counter + (uint64_t)n;
    chunk_state_update(&cs, ZERO_CHUNK, input_len - position);
    output_t o = chunk_state_output(&cs);
    output_chaining_value(&o, &out[n * BLAKE3_OUT_LEN]);
    return n + 1;
  }
  return n;
}

/* blake3_compress_subtree_wide for zeros (the same recursion, without TBB). */
static size_t zero_subtree_wide(size_t input_len, uint64_t chunk_counter, uint8_t *out) {
  if (input_len <= blake3_simd_degree() * BLAKE3_CHUNK_LEN) return zero_chunks_parallel(input_len, chunk_counter, out);
  size_t left_len = left_subtree_len(input_len);
  uint64_t right_counter = chunk_counter + (uint64_t)(left_len / BLAKE3_CHUNK_LEN);
  uint8_t cv_array[2 * MAX_SIMD_DEGREE_OR_2 * BLAKE3_OUT_LEN];
  size_t degree = blake3_simd_degree();
  if (left_len > BLAKE3_CHUNK_LEN && degree == 1) degree = 2;
  uint8_t *right_cvs = &cv_array[degree * BLAKE3_OUT_LEN];
  size_t left_n = zero_subtree_wide(left_len, chunk_counter, cv_array);
  size_t right_n = zero_subtree_wide(input_len - left_len, right_counter, right_cvs);
  if (left_n == 1) {
    memcpy(out, cv_array, 2 * BLAKE3_OUT_LEN);
    return 2;
  }
  return compress_parents_parallel(cv_array, left_n + right_n, IV, 0, out);
}

/* compress_subtree_to_parent_node for zeros. */
static void zero_subtree_to_parent_node(size_t input_len, uint64_t chunk_counter, uint8_t out[2 * BLAKE3_OUT_LEN]) {
  uint8_t cv_array[MAX_SIMD_DEGREE_OR_2 * BLAKE3_OUT_LEN];
  size_t num_cvs = zero_subtree_wide(input_len, chunk_counter, cv_array);
#if MAX_SIMD_DEGREE_OR_2 > 2
  uint8_t out_array[MAX_SIMD_DEGREE_OR_2 * BLAKE3_OUT_LEN / 2];
  while (num_cvs > 2) {
    num_cvs = compress_parents_parallel(cv_array, num_cvs, IV, 0, out_array);
    memcpy(cv_array, out_array, num_cvs * BLAKE3_OUT_LEN);
  }
#endif
  memcpy(out, cv_array, 2 * BLAKE3_OUT_LEN);
}

/* The non-root CV of the subtree of `len` bytes (input, or zeros when NULL) at chunk `counter`. */
static void subtree_cv(const uint8_t *input, size_t len, uint64_t counter, uint8_t out[BLAKE3_OUT_LEN]) {
  if (len <= BLAKE3_CHUNK_LEN) {
    blake3_chunk_state cs;
    chunk_state_init(&cs, IV, 0);
    cs.chunk_counter = counter;
    chunk_state_update(&cs, input ? input : ZERO_CHUNK, len);
    output_t o = chunk_state_output(&cs);
    output_chaining_value(&o, out);
    return;
  }
  uint8_t pair[2 * BLAKE3_OUT_LEN];
  if (input) compress_subtree_to_parent_node(input, len, IV, counter, 0, pair, false);
  else zero_subtree_to_parent_node(len, counter, pair);
  output_t o = parent_output(pair, IV, 0);
  output_chaining_value(&o, out);
}

#define CHECK(call)                                                    \
  do {                                                                 \
    if ((call) != napi_ok) {                                           \
      napi_throw_error(env, NULL, "blake3 tree: N-API call failed");   \
      return NULL;                                                     \
    }                                                                  \
  } while (0)

/*
 * The call's arguments into argv: exactly n of them, or a TypeError naming the function
 * ("<name> expects <n> arguments") and 0.
 */
static int args_of(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *name) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    napi_throw_error(env, NULL, "blake3 tree: N-API call failed");
    return 0;
  }
  if (argc != n) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s expects %zu arguments", name, n);
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

/* The ordinary BLAKE3 digest (b3sum's) of data[0, len) into out[0, 32). */
static void digest_of(const uint8_t *data, size_t len, uint8_t *out) {
  blake3_hasher h;
  blake3_hasher_init(&h);
  blake3_hasher_update(&h, data, len);
  blake3_hasher_finalize(&h, out, BLAKE3_OUT_LEN);
}

/* Resolves `deferred` with undefined when the async work ran, else rejects it ("<name>: cancelled"). */
static void settle_work(napi_env env, napi_deferred deferred, napi_status status, const char *name) {
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  if (status == napi_ok) {
    napi_resolve_deferred(env, deferred, undefined);
    return;
  }
  char text[96];
  snprintf(text, sizeof text, "%s: cancelled", name);
  napi_value msg, err;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, NULL, msg, &err);
  napi_reject_deferred(env, deferred, err);
}

/* The bytes of a Uint8Array argument (NULL, length 0 for null/undefined when allowed). */
static int bytes_of(napi_env env, napi_value v, int allow_null, uint8_t **data, size_t *len, const char *what) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (allow_null && (t == napi_null || t == napi_undefined)) {
    *data = NULL;
    *len = 0;
    return 1;
  }
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  napi_typedarray_type type;
  size_t byte_offset;
  napi_value ab;
  void *p;
  if (!is_ta || napi_get_typedarray_info(env, v, &type, len, &p, &ab, &byte_offset) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, what);
    return 0;
  }
  *data = (uint8_t *)p;
  return 1;
}

/* A subtree's arguments: (data | null, length, chunkCounter, out), checked. */
typedef struct {
  uint8_t *data;
  size_t len;
  uint64_t counter;
  uint8_t *out;
} cv_args;

static int cv_args_of(napi_env env, napi_value *argv, cv_args *a) {
  size_t data_len, out_len;
  double len_d, counter_d;
  if (!bytes_of(env, argv[0], 1, &a->data, &data_len, "blake3Cv: data must be a Uint8Array or null")) return 0;
  if (!bytes_of(env, argv[3], 0, &a->out, &out_len, "blake3Cv: out must be a Uint8Array")) return 0;
  if (napi_get_value_double(env, argv[1], &len_d) != napi_ok || napi_get_value_double(env, argv[2], &counter_d) != napi_ok) {
    napi_throw_type_error(env, NULL, "blake3Cv: length and chunkCounter must be numbers");
    return 0;
  }
  if (!(len_d >= 1) || len_d != floor(len_d) || len_d > 9007199254740991.0 || !(counter_d >= 0) || counter_d != floor(counter_d) || counter_d > 9007199254740991.0) {
    napi_throw_range_error(env, NULL, "blake3Cv: length must be a positive integer and chunkCounter a non-negative integer");
    return 0;
  }
  a->len = (size_t)len_d;
  a->counter = (uint64_t)counter_d;
  if (a->data && data_len < a->len) {
    napi_throw_range_error(env, NULL, "blake3Cv: length exceeds the data");
    return 0;
  }
  if (out_len < BLAKE3_OUT_LEN) {
    napi_throw_range_error(env, NULL, "blake3Cv: out must hold 32 bytes");
    return 0;
  }
  /* A subtree: its chunk count rounded up to a power of two divides its first chunk's index. */
  uint64_t chunks = (a->len + BLAKE3_CHUNK_LEN - 1) / BLAKE3_CHUNK_LEN;
  uint64_t span = 1;
  while (span < chunks) span <<= 1;
  if (a->counter % span != 0) {
    napi_throw_range_error(env, NULL, "blake3Cv: not a subtree (chunkCounter is not a multiple of the span's power of two)");
    return 0;
  }
  return 1;
}

static napi_value js_cv(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args_of(env, info, 4, argv, "blake3Cv")) return NULL;
  cv_args a;
  if (!cv_args_of(env, argv, &a)) return NULL;
  subtree_cv(a.data, a.len, a.counter, a.out);
  return NULL;
}

typedef struct {
  cv_args a;
  napi_ref data_ref; /* keeps the input's and the output's memory alive while the work runs */
  napi_ref out_ref;
  napi_deferred deferred;
  napi_async_work work;
} cv_work;

static void cv_execute(napi_env env, void *p) {
  (void)env;
  cv_work *w = (cv_work *)p;
  subtree_cv(w->a.data, w->a.len, w->a.counter, w->a.out);
}

static void cv_complete(napi_env env, napi_status status, void *p) {
  cv_work *w = (cv_work *)p;
  settle_work(env, w->deferred, status, "blake3CvAsync");
  if (w->data_ref) napi_delete_reference(env, w->data_ref);
  napi_delete_reference(env, w->out_ref);
  napi_delete_async_work(env, w->work);
  free(w);
}

static napi_value js_cv_async(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args_of(env, info, 4, argv, "blake3CvAsync")) return NULL;
  cv_work *w = (cv_work *)calloc(1, sizeof *w);
  if (!w) {
    napi_throw_error(env, NULL, "blake3CvAsync: out of memory");
    return NULL;
  }
  if (!cv_args_of(env, argv, &w->a)) {
    free(w);
    return NULL;
  }
  napi_value promise, name;
  if ((w->a.data && napi_create_reference(env, argv[0], 1, &w->data_ref) != napi_ok) ||
      napi_create_reference(env, argv[3], 1, &w->out_ref) != napi_ok ||
      napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "xfer:blake3Cv", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, cv_execute, cv_complete, w, &w->work) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok) {
    /* Only reachable when N-API itself fails (out of memory): leak rather than guess what to free. */
    napi_throw_error(env, NULL, "blake3CvAsync: N-API call failed");
    return NULL;
  }
  return promise;
}

/* blake3HashManyAsync: the digests of a list of buffers, computed on libuv's thread pool. */
typedef struct {
  size_t n;
  const uint8_t **data; /* n pointers, and n lengths */
  size_t *len;
  uint8_t *out;         /* n * 32 bytes */
  napi_ref list_ref;    /* the list keeps its buffers alive while the work runs; the caller must not write them */
  napi_ref out_ref;
  napi_deferred deferred;
  napi_async_work work;
} hash_work;

static void hash_execute(napi_env env, void *p) {
  (void)env;
  hash_work *w = (hash_work *)p;
  for (size_t i = 0; i < w->n; i++) digest_of(w->data[i], w->len[i], w->out + i * BLAKE3_OUT_LEN);
}

static void hash_free(napi_env env, hash_work *w) {
  if (w->list_ref) napi_delete_reference(env, w->list_ref);
  if (w->out_ref) napi_delete_reference(env, w->out_ref);
  free(w->data);
  free(w->len);
  free(w);
}

static void hash_complete(napi_env env, napi_status status, void *p) {
  hash_work *w = (hash_work *)p;
  settle_work(env, w->deferred, status, "blake3HashManyAsync");
  napi_delete_async_work(env, w->work);
  hash_free(env, w);
}

static napi_value js_hash_many_async(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args_of(env, info, 2, argv, "blake3HashManyAsync")) return NULL;
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[0], &n) != napi_ok) {
    napi_throw_type_error(env, NULL, "blake3HashManyAsync: list must be an array of Uint8Arrays");
    return NULL;
  }
  uint8_t *out;
  size_t out_len;
  if (!bytes_of(env, argv[1], 0, &out, &out_len, "blake3HashManyAsync: out must be a Uint8Array")) return NULL;
  if (out_len < (size_t)n * BLAKE3_OUT_LEN) {
    napi_throw_range_error(env, NULL, "blake3HashManyAsync: out must hold 32 bytes per buffer");
    return NULL;
  }
  hash_work *w = (hash_work *)calloc(1, sizeof *w);
  if (!w || !(w->data = (const uint8_t **)calloc(n ? n : 1, sizeof *w->data)) || !(w->len = (size_t *)calloc(n ? n : 1, sizeof *w->len))) {
    if (w) hash_free(env, w);
    napi_throw_error(env, NULL, "blake3HashManyAsync: out of memory");
    return NULL;
  }
  w->n = n;
  w->out = out;
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    uint8_t *d;
    if (napi_get_element(env, argv[0], i, &item) != napi_ok || !bytes_of(env, item, 0, &d, &w->len[i], "blake3HashManyAsync: list must be an array of Uint8Arrays")) {
      hash_free(env, w);
      return NULL;
    }
    w->data[i] = d;
  }
  napi_value promise, name;
  if (napi_create_reference(env, argv[0], 1, &w->list_ref) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &w->out_ref) != napi_ok ||
      napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "xfer:blake3HashMany", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, hash_execute, hash_complete, w, &w->work) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok) {
    /* Only reachable when N-API itself fails (out of memory): leak rather than guess what to free. */
    napi_throw_error(env, NULL, "blake3HashManyAsync: N-API call failed");
    return NULL;
  }
  return promise;
}

static napi_value js_parent(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!args_of(env, info, 4, argv, "blake3Parent")) return NULL;
  uint8_t *left, *right, *out;
  size_t left_len, right_len, out_len;
  bool root;
  if (!bytes_of(env, argv[0], 0, &left, &left_len, "blake3Parent: left must be a Uint8Array")) return NULL;
  if (!bytes_of(env, argv[1], 0, &right, &right_len, "blake3Parent: right must be a Uint8Array")) return NULL;
  if (!bytes_of(env, argv[3], 0, &out, &out_len, "blake3Parent: out must be a Uint8Array")) return NULL;
  CHECK(napi_get_value_bool(env, argv[2], &root));
  if (left_len < BLAKE3_OUT_LEN || right_len < BLAKE3_OUT_LEN || out_len < BLAKE3_OUT_LEN) {
    napi_throw_range_error(env, NULL, "blake3Parent: left, right and out must hold 32 bytes");
    return NULL;
  }
  uint8_t block[BLAKE3_BLOCK_LEN];
  memcpy(block, left, BLAKE3_OUT_LEN);
  memcpy(block + BLAKE3_OUT_LEN, right, BLAKE3_OUT_LEN);
  output_t o = parent_output(block, IV, 0);
  if (root) output_root_bytes(&o, 0, out, BLAKE3_OUT_LEN);
  else output_chaining_value(&o, out);
  return NULL;
}

/*
 * blake3Hash(data, out): the BLAKE3 digest of data (32 bytes into out), on this thread.
 * hash/digest.ts digestOf uses it where the addon is loaded, so a process that hashes a
 * few chunks on its main thread does not load @napi-rs/blake-hash (whose loader costs
 * 20-40 ms: its musl check builds a process report).
 */
static napi_value js_hash(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!args_of(env, info, 2, argv, "blake3Hash")) return NULL;
  uint8_t *data, *out;
  size_t len, out_len;
  if (!bytes_of(env, argv[0], 0, &data, &len, "blake3Hash: data must be a Uint8Array")) return NULL;
  if (!bytes_of(env, argv[1], 0, &out, &out_len, "blake3Hash: out must be a Uint8Array")) return NULL;
  if (out_len < BLAKE3_OUT_LEN) {
    napi_throw_range_error(env, NULL, "blake3Hash: out must hold 32 bytes");
    return NULL;
  }
  digest_of(data, len, out);
  return NULL;
}

napi_status init_blake3_tree(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {{"blake3Cv", js_cv}, {"blake3CvAsync", js_cv_async}, {"blake3Parent", js_parent}, {"blake3HashManyAsync", js_hash_many_async}, {"blake3Hash", js_hash}};
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value fn;
    napi_status s = napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &fn);
    if (s != napi_ok) return s;
    if ((s = napi_set_named_property(env, exports, fns[i].name, fn)) != napi_ok) return s;
  }
  return napi_ok;
}
