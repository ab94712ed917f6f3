/*
 * xfer native chunker: the FastCDC 2020 scan loop (Gear hash, normalized chunking level 1,
 * two bytes per step), boundary-identical to src/chunker/fastcdc.ts, which is its
 * specification. Only the scan runs here; everything else stays in TypeScript.
 *
 * JS signature (see src/chunker/native.ts):
 *   cut(buf: Uint8Array, pos, end, eof: boolean, startLimit, min, avg, max, out: Uint32Array) -> count
 * with the contract of the Chunker interface in src/chunker/chunker.ts.
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <node_api.h>
#include "gear.h"
#include "sys.h"
#include "blake3_tree.h"

static const uint64_t MASKS[26] = {
  0, 0, 0, 0, 0,
  0x0000000001804110ULL, 0x0000000001803110ULL, 0x0000000018035100ULL, 0x0000001800035300ULL,
  0x0000019000353000ULL, 0x0000590003530000ULL, 0x0000d90003530000ULL, 0x0000d90103530000ULL,
  0x0000d90303530000ULL, 0x0000d90313530000ULL, 0x0000d90f03530000ULL, 0x0000d90303537000ULL,
  0x0000d90703537000ULL, 0x0000d90707537000ULL, 0x0000d91707537000ULL, 0x0000d91747537000ULL,
  0x0000d91767537000ULL, 0x0000d93767537000ULL, 0x0000d93777537000ULL, 0x0000d93777577000ULL,
  0x0000db3777577000ULL,
};

typedef struct {
  size_t min, avg, max;
  uint64_t mask_s, mask_l, mask_s_ls, mask_l_ls;
} params_t;

static size_t cut_one(const uint8_t *src, size_t avail, const params_t *p) {
  size_t remaining = avail;
  if (remaining <= p->min) return remaining;
  size_t center = p->avg;
  if (remaining > p->max) remaining = p->max;
  else if (remaining < center) center = remaining;
  size_t index = p->min / 2;
  uint64_t hash = 0;
  const uint64_t ms = p->mask_s, msl = p->mask_s_ls, ml = p->mask_l, mll = p->mask_l_ls;
  for (size_t half = center / 2; index < half; index++) {
    size_t a = index * 2;
    hash = (hash << 2) + GEAR_LS[src[a]];
    if ((hash & msl) == 0) return a;
    hash += GEAR[src[a + 1]];
    if ((hash & ms) == 0) return a + 1;
  }
  for (size_t half = remaining / 2; index < half; index++) {
    size_t a = index * 2;
    hash = (hash << 2) + GEAR_LS[src[a]];
    if ((hash & mll) == 0) return a;
    hash += GEAR[src[a + 1]];
    if ((hash & ml) == 0) return a + 1;
  }
  return remaining;
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, "XFER_INTERNAL", "native chunker: bad arguments"); return NULL; } } while (0)

static napi_value js_cut(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 9) { napi_throw_type_error(env, NULL, "cut expects 9 arguments"); return NULL; }

  napi_typedarray_type type;
  size_t buf_len, out_len;
  void *buf_data, *out_data;
  napi_value ab;
  size_t byte_offset;
  CHECK(napi_get_typedarray_info(env, argv[0], &type, &buf_len, &buf_data, &ab, &byte_offset));
  if (type != napi_uint8_array) { napi_throw_type_error(env, NULL, "buf must be a Uint8Array"); return NULL; }
  CHECK(napi_get_typedarray_info(env, argv[8], &type, &out_len, &out_data, &ab, &byte_offset));
  if (type != napi_uint32_array) { napi_throw_type_error(env, NULL, "out must be a Uint32Array"); return NULL; }

  double pos_d, end_d, limit_d;
  bool eof;
  uint32_t min, avg, max;
  CHECK(napi_get_value_double(env, argv[1], &pos_d));
  CHECK(napi_get_value_double(env, argv[2], &end_d));
  CHECK(napi_get_value_bool(env, argv[3], &eof));
  CHECK(napi_get_value_double(env, argv[4], &limit_d));
  CHECK(napi_get_value_uint32(env, argv[5], &min));
  CHECK(napi_get_value_uint32(env, argv[6], &avg));
  CHECK(napi_get_value_uint32(env, argv[7], &max));
  if (pos_d < 0 || end_d < pos_d || end_d > (double)buf_len || min == 0 || avg == 0 || max == 0) {
    napi_throw_range_error(env, NULL, "cut: pos/end out of range");
    return NULL;
  }

  params_t p;
  p.min = min; p.avg = avg; p.max = max;
  int bits = (int)lround(log2((double)avg));
  if (bits < 6 || bits > 24) { napi_throw_range_error(env, NULL, "cut: avg out of range"); return NULL; }
  p.mask_s = MASKS[bits + 1];
  p.mask_l = MASKS[bits - 1];
  p.mask_s_ls = p.mask_s << 1;
  p.mask_l_ls = p.mask_l << 1;

  const uint8_t *data = (const uint8_t *)buf_data;
  uint32_t *out = (uint32_t *)out_data;
  size_t pos = (size_t)pos_d, end = (size_t)end_d;
  double limit = limit_d;
  uint32_t n = 0;
  while (n < out_len && pos < end && (double)pos < limit) {
    size_t avail = end - pos;
    if (avail < p.max && !eof) break;
    size_t len = cut_one(data + pos, avail, &p);
    out[n++] = (uint32_t)len;
    pos += len;
  }
  napi_value result;
  CHECK(napi_create_uint32(env, n, &result));
  return result;
}

/*
 * addressMod(buf: Uint8Array, align: number) -> number: the address of buf[0] modulo align
 * (a power of two). JavaScript cannot see addresses; O_DIRECT I/O needs buffers aligned
 * to the device's block size, so src/io/direct.ts over-allocates and takes the aligned
 * subarray this tells it where to find.
 */
static napi_value js_address_mod(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc != 2) { napi_throw_type_error(env, NULL, "addressMod expects 2 arguments"); return NULL; }
  napi_typedarray_type type;
  size_t len, byte_offset;
  void *data;
  napi_value ab;
  CHECK(napi_get_typedarray_info(env, argv[0], &type, &len, &data, &ab, &byte_offset));
  uint32_t align;
  CHECK(napi_get_value_uint32(env, argv[1], &align));
  if (align == 0 || (align & (align - 1)) != 0) { napi_throw_range_error(env, NULL, "addressMod: align must be a power of two"); return NULL; }
  napi_value result;
  CHECK(napi_create_uint32(env, (uint32_t)((uintptr_t)data & (uintptr_t)(align - 1)), &result));
  return result;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  if (napi_create_function(env, "cut", NAPI_AUTO_LENGTH, js_cut, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "cut", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "addressMod", NAPI_AUTO_LENGTH, js_address_mod, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "addressMod", fn) != napi_ok) return NULL;
  if (init_sys(env, exports) != napi_ok) return NULL;
  if (init_blake3_tree(env, exports) != napi_ok) return NULL;
  return exports;
}
