// libzstd's functions, as imgtool uses them, loaded with dlopen on the first
// call instead of linked (see lazy_library.h): only layer compression and
// decompression need them, and a linked libzstd cost every start of imgtool,
// `imgtool run` included, about 0.1 ms of the dynamic loader. (Its static
// archive is no way out: Debian builds it without the multi-threading that
// layer compression uses.)
//
// Each function has zstd.h's prototype and forwards to the symbol of the same
// name in libzstd.so.1. A zstd function that is not listed here is an
// undefined reference at link time: add it to the list.
#include <zstd.h>

#include "common/lazy_library.h"

#define IMGTOOL_ZSTD_FORWARD(ret, name, params, args) \
  IMGTOOL_LAZY_FORWARD("libzstd.so.1", "libzstd1", ret, name, params, args)

IMGTOOL_ZSTD_FORWARD(const char*, ZSTD_versionString, (void), ())
IMGTOOL_ZSTD_FORWARD(unsigned, ZSTD_isError, (size_t code), (code))
IMGTOOL_ZSTD_FORWARD(const char*, ZSTD_getErrorName, (size_t code), (code))
IMGTOOL_ZSTD_FORWARD(int, ZSTD_maxCLevel, (void), ())

IMGTOOL_ZSTD_FORWARD(ZSTD_CCtx*, ZSTD_createCCtx, (void), ())
IMGTOOL_ZSTD_FORWARD(size_t, ZSTD_freeCCtx, (ZSTD_CCtx * cctx), (cctx))
IMGTOOL_ZSTD_FORWARD(size_t, ZSTD_CCtx_setParameter,
                     (ZSTD_CCtx * cctx, ZSTD_cParameter param, int value), (cctx, param, value))
IMGTOOL_ZSTD_FORWARD(size_t, ZSTD_CStreamOutSize, (void), ())
IMGTOOL_ZSTD_FORWARD(size_t, ZSTD_compressStream2,
                     (ZSTD_CCtx * cctx, ZSTD_outBuffer* output, ZSTD_inBuffer* input,
                      ZSTD_EndDirective end_op),
                     (cctx, output, input, end_op))

IMGTOOL_ZSTD_FORWARD(ZSTD_DCtx*, ZSTD_createDCtx, (void), ())
IMGTOOL_ZSTD_FORWARD(size_t, ZSTD_freeDCtx, (ZSTD_DCtx * dctx), (dctx))
IMGTOOL_ZSTD_FORWARD(size_t, ZSTD_decompressStream,
                     (ZSTD_DStream * zds, ZSTD_outBuffer* output, ZSTD_inBuffer* input),
                     (zds, output, input))
