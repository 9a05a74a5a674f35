// Running a container, parent side: everything that can be prepared is
// prepared before the clone (capabilities, the compiled seccomp filter, the
// user, the detached rootfs tree, the mount plan, argv/envp), so that the child
// only makes system calls. Then: clone3 into the new namespaces (straight into
// the cgroup on v2), id maps, v1 cgroup join and network from the parent, one
// "go on" message when the child has to wait for those, and end-of-file on the
// sync channel when the command was exec'd.
//
//   auto container = Container::Start(spec, stdio);   // the command runs
//   Result<ExitStatus> status = (*container)->Wait();  // forwards signals, relays the pty
//
// Start() blocks SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 (and
// SIGWINCH with a terminal) in the calling thread, so that a ^C between Start
// and Wait reaches the container rather than killing imgtool; Wait() and the
// destructor restore the mask. The container gets SIGKILL if the thread that
// started it ends, so start and wait from a thread that outlives it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "common/error.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "runner/cgroup_manager.h"
#include "runner/network.h"
#include "runner/process_spec.h"
#include "runner/pty.h"
#include "runner/sync_channel.h"
#include "runner/userns_alloc.h"

namespace imgtool::runner {

// The cgroup settings of `spec`: its limits, and every device node allowed
// when it is --privileged (docker's default list otherwise).
CgroupResources CgroupResourcesOf(const ContainerSpec& spec);

// The parts of a container's start that need no image, for a caller that can
// begin them before the rest is known (the image found, the snapshot ready):
// the cgroup (claim, dirs and limits) and, when asked, a network namespace
// with lo up, made on threads of their own while the caller goes on.
// Container::Start waits for them and takes them over (a failure to make the
// cgroup is the start's failure; without the namespace the clone makes one);
// unused, they are removed.
class EarlyStart {
 public:
  // `resources` must be CgroupResourcesOf the spec Container::Start is given.
  static std::unique_ptr<EarlyStart> Begin(const std::string& container_id,
                                           const CgroupResources& resources,
                                           bool network_namespace);
  ~EarlyStart();
  EarlyStart(const EarlyStart&) = delete;
  EarlyStart& operator=(const EarlyStart&) = delete;

  // Waits until the cgroup is made; its error when that failed.
  Status Wait();

 private:
  friend class Container;
  EarlyStart() = default;
  Status Make();  // the cgroup
  void MakeNetworkNamespace();

  std::string id_;
  CgroupResources resources_;
  std::thread thread_;         // Make
  std::thread netns_thread_;   // MakeNetworkNamespace
  Status made_;
  // Set by Make, read once the thread is joined.
  CgroupLayout layout_;
  std::unique_ptr<CgroupManager> manager_;
  CgroupClaim claim_;
  UniqueFd netns_;
};

class Container {
 public:
  // Sets up and starts the container. Returns once the command was exec'd, or
  // once exec failed (Wait() then reports 126/127 with the reason). Errors are
  // failures before the command could start: the CLI exits 125 on them.
  // `early`, when given, must be for spec.id and spec.resources.
  static Result<std::unique_ptr<Container>> Start(const ContainerSpec& spec, const Stdio& stdio,
                                                  std::unique_ptr<EarlyStart> early = nullptr);

  // Runs `process` inside the running container whose first process is
  // `container_pid`: joins all of its namespaces (setns on a pidfd) and its
  // cgroup (when `cgroup_id` is not empty), with the given security settings.
  static Result<std::unique_ptr<Container>> Exec(pid_t container_pid, const std::string& cgroup_id,
                                                 const ProcessSpec& process,
                                                 const SecuritySpec& security, const Stdio& stdio);

  ~Container();
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_.get(); }
  // The cgroup of a container made by Start with own_cgroup; null otherwise.
  CgroupManager* cgroup() const { return cgroup_.get(); }
  // Bridge mode: the container's address and gateway.
  const NetworkAttachment& network() const { return attachment_; }

  // Sends `sig` to the container's first process (pidfd_send_signal).
  Status Signal(int sig);

  // Waits until the container's first process ends, forwarding signals to it
  // and relaying the terminal, then cleans up (network, cgroup, temp files).
  // Returns the exit status; errors only for failures of the wait itself.
  Result<ExitStatus> Wait();

 private:
  Container() = default;
  Status ReceiveChildReports(ParentChannel* channel);
  // True once the process runs (or its exec failed and was recorded).
  Result<bool> HandleChildReport(ChildReport report);
  Status WriteEtcFiles();
  ExitStatus StatusFromWait(const siginfo_t& info);
  void Cleanup();
  void RestoreSignalMask();

  std::string id_;
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  bool reaped_ = false;
  std::unique_ptr<CgroupManager> cgroup_;
  // Held while the cgroup exists; a later start cleans up after a creator
  // that died without removing it.
  CgroupClaim cgroup_claim_;
  // Removes the cgroup after the container ended; joined on destruction.
  std::thread cgroup_destroyer_;
  std::unique_ptr<Network> network_;
  bool network_attached_ = false;
  NetworkAttachment attachment_;
  // --userns=auto: a share of the id slice's claim, for the container's life.
  UsernsClaim userns_claim_;
  std::optional<TempDir> temp_state_dir_;
  std::filesystem::path state_dir_;
  std::optional<PtyRelay> relay_;
  std::optional<RawTerminalMode> raw_mode_;
  Stdio stdio_;
  bool terminal_ = false;
  sigset_t forwarded_{};
  sigset_t saved_mask_{};
  bool mask_changed_ = false;
  std::optional<ExitStatus> exec_failure_;

  // For WriteEtcFiles.
  std::string hostname_;
  std::vector<std::string> extra_hosts_;
  NetworkMode network_mode_ = NetworkMode::kNone;
};

// Start + Wait.
Result<ExitStatus> RunContainer(const ContainerSpec& spec, const Stdio& stdio);

// The text of the files the runner binds into every container.
std::string HostsFileContent(const std::string& hostname, const std::string& container_ip,
                             const std::vector<std::string>& extra_hosts);
// The host's resolv.conf, minus nameservers on loopback (unreachable from a
// netns of its own), or the attachment's servers when it names any.
std::string ResolvConfContent(std::string_view host_resolv_conf,
                              const std::vector<std::string>& dns, bool host_network);

}  // namespace imgtool::runner
