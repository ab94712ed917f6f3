/*
 * The system calls Node.js lacks (native/sys.c); their contract is the NativeSys interface
 * in src/io/sys.ts. Registered from the addon's one NAPI_MODULE_INIT (native/fastcdc.c).
 */
#ifndef XFER_SYS_H
#define XFER_SYS_H

#include <node_api.h>

/* Adds listXattrs, setXattr, removeXattr, mknod, lutimesNs, exchange, userName, groupName,
 * userId, groupId, seekData, seekHole, blockDeviceSize, cloneRange and punchHole to
 * `exports` (none on a platform other than Linux: the TypeScript twin serves there). Returns napi_ok or the first failing status. */
napi_status init_sys(napi_env env, napi_value exports);

#endif
