#include "common/lazy_library.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>

namespace imgtool {

namespace {

[[noreturn]] void Fail(const char* what, const char* library, const char* package,
                       const char* why) {
  char line[512];
  int n = std::snprintf(line, sizeof(line), "imgtool: %s %s (package %s): %s\n", what, library,
                        package, why ? why : "unknown error");
  if (n > 0) (void)!::write(STDERR_FILENO, line, std::min<size_t>(n, sizeof(line) - 1));
  ::_exit(125);
}

}  // namespace

void* LazySymbol(const char* library, const char* package, const char* symbol) {
  static std::mutex mutex;
  static std::map<std::string, void*>* handles = new std::map<std::string, void*>();
  void* handle = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex);
    void*& slot = (*handles)[library];
    if (slot == nullptr) {
      slot = ::dlopen(library, RTLD_NOW | RTLD_LOCAL);
      if (slot == nullptr) Fail("load", library, package, ::dlerror());
    }
    handle = slot;
  }
  void* address = ::dlsym(handle, symbol);
  if (address == nullptr) {
    std::string why = std::string("no symbol ") + symbol;
    Fail("use", library, package, why.c_str());
  }
  return address;
}

}  // namespace imgtool
