// Times the runner's full lifecycle of one command (default /bin/true): mount
// the overlay, clone into every namespace, set up the rootfs, exec, wait,
// clean up. Prints the median, min and max of N runs in one process.
//
//   runner_bench LOWER_ROOTFS [-n RUNS] [--net none|host] [--no-cgroup] [--no-seccomp]
//                [--plain] [-o OVERLAY_OPTION]... [-- CMD...]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "runner/container.h"

namespace fs = std::filesystem;
using imgtool::runner::Container;
using imgtool::runner::ContainerSpec;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: runner_bench LOWER_ROOTFS [-n RUNS] [options] [-- CMD...]\n");
    return 2;
  }
  fs::path lower = argv[1];
  int runs = 50;
  bool own_cgroup = true;
  bool seccomp = true;
  bool plain = false;
  imgtool::runner::NetworkMode net = imgtool::runner::NetworkMode::kNone;
  std::vector<std::string> command = {"/bin/true"};
  std::vector<std::string> overlay_options;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-n" && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else if (arg == "--net" && i + 1 < argc) {
      std::string mode = argv[++i];
      net = mode == "host" ? imgtool::runner::NetworkMode::kHost
                           : imgtool::runner::NetworkMode::kNone;
    } else if (arg == "--no-cgroup") {
      own_cgroup = false;
    } else if (arg == "--no-seccomp") {
      seccomp = false;
    } else if (arg == "--plain") {
      plain = true;
    } else if (arg == "-o" && i + 1 < argc) {
      overlay_options.push_back(argv[++i]);
    } else if (arg == "--") {
      command.assign(argv + i + 1, argv + argc);
      break;
    }
  }
  auto work = imgtool::TempDir::Create("imgtool-bench-");
  if (!work) {
    std::fprintf(stderr, "%s\n", work.error().ToString().c_str());
    return 1;
  }
  std::vector<double> millis;
  for (int i = 0; i < runs; ++i) {
    fs::path run_dir = work->path() / std::to_string(i);
    for (const char* sub : {"upper", "work", "merged"}) fs::create_directories(run_dir / sub);
    ContainerSpec spec;
    spec.id = "bench-" + std::to_string(::getpid()) + "-" + std::to_string(i);
    spec.process.args = command;
    spec.network.mode = net;
    spec.own_cgroup = own_cgroup;
    if (!seccomp) spec.security.seccomp = imgtool::runner::SeccompMode::kUnconfined;
    if (plain) {
      spec.rootfs_dir = lower;
    } else {
      spec.rootfs_dir = run_dir / "merged";
      spec.rootfs_mounts = {imgtool::Mount{"overlay", "overlay",
                                           {"lowerdir=" + lower.string(),
                                            "upperdir=" + (run_dir / "upper").string(),
                                            "workdir=" + (run_dir / "work").string()}}};
      for (const std::string& option : overlay_options) {
        spec.rootfs_mounts[0].options.push_back(option);
      }
    }
    auto start = std::chrono::steady_clock::now();
    auto result = imgtool::runner::RunContainer(spec, imgtool::runner::Stdio{});
    auto end = std::chrono::steady_clock::now();
    if (!result) {
      std::fprintf(stderr, "run %d: %s\n", i, result.error().ToString().c_str());
      return 1;
    }
    if (result->exit_code != 0) {
      std::fprintf(stderr, "run %d: exit %d %s\n", i, result->exit_code, result->message.c_str());
      return 1;
    }
    millis.push_back(std::chrono::duration<double, std::milli>(end - start).count());
  }
  std::vector<double> sorted = millis;
  std::sort(sorted.begin(), sorted.end());
  std::printf("runs=%d median=%.2fms min=%.2fms max=%.2fms\n", runs, sorted[sorted.size() / 2],
              sorted.front(), sorted.back());
  return 0;
}
