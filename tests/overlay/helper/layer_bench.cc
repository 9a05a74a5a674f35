// Commits a directory (an overlay upper dir) as an OCI layer blob the way a
// build step does, and prints the blob digest and the time taken. Used by
// bench/commit.sh against umoci repack, gzip, pigz and zstd.
//
//   layer_bench DIR OUT [--zstd] [--threads N]
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "common/byte_sink.h"
#include "common/unique_fd.h"
#include "overlay/differ.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: layer_bench DIR OUT [--zstd] [--threads N]\n");
    return 2;
  }
  imgtool::overlay::DiffOptions options;
  options.source_date_epoch = 0;
  for (int i = 3; i < argc; ++i) {
    if (std::strcmp(argv[i], "--zstd") == 0) {
      options.compression = imgtool::overlay::Compression::kZstd;
    } else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      options.threads = std::stoi(argv[++i]);
    } else {
      std::fprintf(stderr, "layer_bench: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  imgtool::UniqueFd out(::open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) {
    std::perror(argv[2]);
    return 1;
  }
  auto begin = std::chrono::steady_clock::now();
  imgtool::FdSink sink(out.get());
  auto layer = imgtool::overlay::WriteLayer(argv[1], sink, options);
  if (!layer) {
    std::fprintf(stderr, "layer_bench: %s\n", layer.error().ToString().c_str());
    return 1;
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  std::printf("%s %lld %.3f\n", layer->digest.ToString().c_str(),
              static_cast<long long>(layer->size), seconds);
  return 0;
}
