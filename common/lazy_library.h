// Shared libraries that only some commands use are loaded with dlopen on
// their first call instead of linked: every start of imgtool pays the
// dynamic loader for each linked library (about 0.1 ms each here; libarchive
// with libxml2 and ICU about 3.5 ms), and `imgtool run` uses none of them.
// See lazy_libarchive.cc and lazy_libzstd.cc for the forwarding functions.
#pragma once

namespace imgtool {

// The address of `symbol` in `library` (a soname, from Debian package
// `package`), loaded on first use. Ends imgtool with one clear line and exit
// code 125 when either is missing: no caller can go on without it, and many
// of these functions have no error return.
void* LazySymbol(const char* library, const char* package, const char* symbol);

}  // namespace imgtool

// Defines the C function `name` with the library's own prototype (the
// library's header declares it too, so the compiler checks that they agree);
// it forwards to the library's symbol, resolved once (a thread-safe static).
#define IMGTOOL_LAZY_FORWARD(library, package, ret, name, params, args)                      \
  extern "C" ret name params {                                                             \
    static const auto real =                                                               \
        reinterpret_cast<ret(*) params>(::imgtool::LazySymbol(library, package, #name));  \
    return real args;                                                                      \
  }
