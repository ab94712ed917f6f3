/*
 * BLAKE3 subtree chaining values and parent nodes (native/blake3_tree.c); their contract
 * is src/hash/tree.ts. Registered from the addon's one NAPI_MODULE_INIT (native/fastcdc.c).
 */
#ifndef XFER_BLAKE3_TREE_H
#define XFER_BLAKE3_TREE_H

#include <node_api.h>

/* Adds blake3Cv, blake3CvAsync, blake3Parent, blake3HashManyAsync and blake3Hash to `exports`. Returns napi_ok or the first failing status. */
napi_status init_blake3_tree(napi_env env, napi_value exports);

#endif
