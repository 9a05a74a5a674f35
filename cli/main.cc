#include <unistd.h>

#include <cstdio>

#include "cli/app.h"

// The process ends here with _exit: static destructors and the CLI's option
// tree (kept on purpose, see Main) would only be torn down for the kernel to
// free the memory anyway. Everything imgtool writes goes out with write(2);
// stdio is flushed for anything else.
int main(int argc, char** argv) {
  int code = imgtool::cli::Main(argc, argv);
  std::fflush(nullptr);
  ::_exit(code);
}
