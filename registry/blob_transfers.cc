#include "registry/blob_transfers.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>

namespace imgtool::registry {

Status TransferBlobs(std::vector<BlobProgress>& blobs, const BlobTransfer& work) {
  std::mutex mu;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::optional<Error> first_error;
  auto report = [&](size_t i) {
    if (work.progress) work.progress(blobs[i]);
  };
  auto worker = [&] {
    while (!failed) {
      size_t i = next++;
      if (i >= blobs.size()) return;
      {
        std::lock_guard lock(mu);
        if (work.already_there && work.already_there(i)) {
          blobs[i].state = BlobProgress::State::kExists;
          blobs[i].done = blobs[i].size;
          report(i);
          continue;
        }
        blobs[i].state = BlobProgress::State::kDownloading;
        report(i);
      }
      Result<bool> moved = work.transfer(
          i,
          [&, i](int64_t done) {
            std::lock_guard lock(mu);
            blobs[i].done = done;
            report(i);
          },
          [&] { return failed.load(); });
      std::lock_guard lock(mu);
      if (!moved) {
        if (!failed.exchange(true)) first_error = std::move(moved).error();
        return;
      }
      blobs[i].state = *moved ? BlobProgress::State::kDone : BlobProgress::State::kExists;
      blobs[i].done = blobs[i].size;
      report(i);
    }
  };
  int jobs = std::max(1, std::min<int>(work.jobs, static_cast<int>(blobs.size())));
  std::vector<std::thread> threads;
  for (int j = 1; j < jobs; ++j) threads.emplace_back(worker);
  worker();
  for (std::thread& thread : threads) thread.join();
  if (first_error) return std::move(*first_error);
  return OkStatus();
}

}  // namespace imgtool::registry
