#include "cli/app.h"

#include <cstdio>

namespace imgtool::cli {

int Main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::puts("imgtool 0.1.0");
  return 0;
}

}  // namespace imgtool::cli
