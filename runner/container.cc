#include "runner/container.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "common/file_util.h"
#include "common/log.h"
#include "common/signal_block.h"
#include "runner/caps.h"
#include "runner/cgroup_detect.h"
#include "runner/init.h"
#include "runner/namespaces.h"
#include "runner/process_exec.h"
#include "runner/rootfs.h"
#include "runner/seccomp.h"
#include "runner/sync_channel.h"
#include "runner/user.h"

namespace imgtool::runner {

namespace {

// The v1 hierarchies in which the container has a cgroup of its own (those
// holding a controller imgtool manages), as the container sees them
// (rootfs.h): one per mount point, named as on the host. The others would
// show the host's whole tree (the cgroup namespace is rooted where the
// container's process was, the host's root there), so they are left out.
std::vector<CgroupV1View> CgroupV1Views(const CgroupLayout& layout) {
  std::vector<CgroupV1View> views;
  for (const auto& [mount, controllers] : ManagedV1Hierarchies(layout.v1_mounts)) {
    CgroupV1View view;
    view.name = mount.filename().string();
    for (const std::string& controller : controllers) {
      if (!view.controllers.empty()) view.controllers += ',';
      view.controllers += controller;
      if (controller != view.name) view.aliases.push_back(controller);
    }
    views.push_back(std::move(view));
  }
  return views;
}

namespace fs = std::filesystem;

constexpr const char* kRunDir = "/run/imgtool";

// waitid(P_PIDFD, ...) (Linux >= 5.4); glibc's idtype_t does not name it.
constexpr idtype_t kPidfdIdType = static_cast<idtype_t>(3);

int PidfdSendSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// The calling thread's stay in a v1 cgroup it entered with
// EnterWithThisThread: over at Leave, or at the latest on scope exit.
class ThreadInCgroup {
 public:
  explicit ThreadInCgroup(CgroupManager* cgroup) : cgroup_(cgroup) {}
  ThreadInCgroup(ThreadInCgroup&& other) noexcept
      : cgroup_(std::exchange(other.cgroup_, nullptr)) {}
  ThreadInCgroup& operator=(ThreadInCgroup&&) = delete;
  ~ThreadInCgroup() { (void)Leave(); }
  Status Leave() {
    CgroupManager* cgroup = std::exchange(cgroup_, nullptr);
    return cgroup != nullptr ? cgroup->LeaveWithThisThread() : OkStatus();
  }

 private:
  CgroupManager* cgroup_;
};

// For a clone into `cgroup` without CLONE_INTO_CGROUP (`cgroup_fd` < 0): on
// cgroup v1 this thread steps in, so that the child starts there and nobody
// waits for a move. Nullopt when the caller must move the child itself
// (AddProcess), or there is no cgroup.
Result<std::optional<ThreadInCgroup>> EnterForClone(CgroupManager* cgroup, int cgroup_fd) {
  std::optional<ThreadInCgroup> entered;
  if (cgroup == nullptr || cgroup_fd >= 0) return entered;
  Status status = cgroup->EnterWithThisThread();
  if (status) {
    entered.emplace(cgroup);
  } else if (status.error().code() != ErrorCode::kNotFound) {
    return std::move(status).error();
  }
  return entered;
}

// Everything the child needs, prepared by the parent before the clone.
struct ChildPlan {
  // The parent writes the id maps before the child may do anything.
  bool wait_before_setup = false;
  // The parent joins the child to its cgroups (when it could not start the
  // child in them) and/or attaches its network while the child sets up the
  // rootfs; the command runs only after that.
  bool wait_before_exec = false;
  // The cgroup namespace is made after that wait: its root is the cgroup
  // the process sits in at the time.
  bool cgroup_namespace_after_wait = false;
  bool user_namespace = false;
  // The container's cgroup `tasks` files (v1, TakeSelfEntryFiles):
  // the child moves itself in with a write to each before anything else.
  std::vector<int> cgroup_entry_fds;
  bool bring_up_loopback = false;
  // A network namespace made ahead (lo up) to join instead of a new one.
  int netns_fd = -1;
  std::string hostname;
  RootfsPlan rootfs;
  int tree_fd = -1;
  ProcessPlan* process = nullptr;
  bool init = false;
  // Cloned without CLONE_NEWTIME (VforkChild): the child unshares it, and
  // the command enters it at exec.
  bool unshare_time_namespace = false;
};

// In a new user namespace the child still carries the host ids it was cloned
// with, which the namespace does not map; once the parent wrote the maps, it
// switches to the namespace's root (keeping its capabilities there), so that
// files it creates get an owner the namespace knows.
// (Raw system calls: glibc's wrappers are not safe in the child, see
// DropPrivileges.)
ChildStatus BecomeNamespaceRoot() noexcept {
  if (::syscall(SYS_setresgid, 0, 0, 0) != 0) {
    return ChildStatus::Failure(errno, "setresgid in the user namespace");
  }
  if (::syscall(SYS_setresuid, 0, 0, 0) != 0) {
    return ChildStatus::Failure(errno, "setresuid in the user namespace");
  }
  return ChildStatus();
}

ChildStatus SetUpContainerInChild(const ChildPlan& plan, ChildChannel* channel) noexcept {
  for (int fd : plan.cgroup_entry_fds) {
    if (::write(fd, "0", 1) != 1) return ChildStatus::Failure(errno, "move into the cgroup");
    ::close(fd);
  }
  // Device nodes and dirs get exactly the modes the plan names; the command
  // gets umask 022 back before exec.
  ::umask(0);
  // Once the process sits in its cgroup, that cgroup becomes the root of the
  // container's cgroup namespace.
  auto unshare_cgroup_namespace = []() noexcept {
    return ::unshare(CLONE_NEWCGROUP) == 0
               ? ChildStatus()
               : ChildStatus::Failure(errno, "unshare the cgroup namespace");
  };
  if (plan.netns_fd >= 0 && ::setns(plan.netns_fd, CLONE_NEWNET) != 0) {
    return ChildStatus::Failure(errno, "join the network namespace");
  }
  if (!plan.cgroup_namespace_after_wait) IMGTOOL_CHILD_TRY(unshare_cgroup_namespace());
  if (plan.bring_up_loopback) {
    if (int err = BringUpLoopbackErrno(); err != 0) {
      return ChildStatus::Failure(err, "set the loopback interface up");
    }
  }
  if (!plan.hostname.empty() && ::sethostname(plan.hostname.data(), plan.hostname.size()) != 0) {
    return ChildStatus::Failure(errno, "set the hostname ", plan.hostname.c_str());
  }
  IMGTOOL_CHILD_TRY(SetupRootfs(plan.rootfs, plan.tree_fd));
  if (plan.wait_before_exec) {
    if (!channel->WaitForParent()) ::_exit(125);  // the parent failed and says why
    if (plan.cgroup_namespace_after_wait) IMGTOOL_CHILD_TRY(unshare_cgroup_namespace());
  }
  IMGTOOL_CHILD_TRY(ConnectStdio(*plan.process, channel));
  return DropPrivileges(*plan.process);
}

// `parent_end_fd` is the child's copy of the parent's end, closed with a
// plain close: the ParentChannel object may be the parent's own memory.
[[noreturn]] void ContainerChildMain(const ChildPlan& plan, int parent_end_fd,
                                     ChildChannel* channel) noexcept {
  ::close(parent_end_fd);
  // If imgtool dies, so does the container, instead of running on unseen.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (plan.wait_before_setup && !channel->WaitForParent()) ::_exit(125);
  ChildStatus status = plan.user_namespace ? BecomeNamespaceRoot() : ChildStatus();
  if (status.ok() && plan.unshare_time_namespace && ::unshare(CLONE_NEWTIME) != 0) {
    status = ChildStatus::Failure(errno, "unshare the time namespace");
  }
  if (status.ok()) status = SetUpContainerInChild(plan, channel);
  if (!status.ok()) {
    channel->ReportSetupFailure(status);
    ::_exit(125);
  }
  if (plan.init) RunInit(*plan.process, channel);
  ExecProcess(*plan.process, channel);
}

struct VforkChildArgs {
  const ChildPlan* plan;
  int parent_end_fd;
  ChildChannel* channel;
};

int VforkContainerChild(void* arg) {
  const auto* args = static_cast<const VforkChildArgs*>(arg);
  ContainerChildMain(*args->plan, args->parent_end_fd, args->channel);
}

// The helper of Exec: joins the container's namespaces, then starts the
// process as a sibling (CLONE_PARENT), so that imgtool is its parent and can
// wait for it, and hands its pid and pidfd over.
[[noreturn]] void ExecHelperMain(int target_pidfd, uint64_t join_flags, bool wait_for_parent,
                                 const ProcessPlan& plan, ParentChannel* parent_end,
                                 ChildChannel* channel) noexcept {
  parent_end->Close();
  if (wait_for_parent && !channel->WaitForParent()) ::_exit(125);
  ChildStatus joined = JoinNamespacesOf(target_pidfd, join_flags);
  if (!joined.ok()) {
    channel->ReportSetupFailure(joined);
    ::_exit(125);
  }
  int pidfd = -1;
  long pid = CloneChildRaw(CLONE_PARENT, -1, &pidfd);
  if (pid < 0) {
    channel->ReportSetupFailure(ChildStatus::Failure(static_cast<int>(-pid),
                                                     "start the process in the container"));
    ::_exit(125);
  }
  if (pid == 0) {
    ChildStatus status = ConnectStdio(plan, channel);
    if (status.ok()) status = DropPrivileges(plan);
    if (!status.ok()) {
      channel->ReportSetupFailure(status);
      ::_exit(125);
    }
    ExecProcess(plan, channel);
  }
  channel->SendPid(static_cast<pid_t>(pid), pidfd);
  ::_exit(0);
}

Result<std::optional<SeccompProgram>> SeccompFor(const SecuritySpec& security,
                                                 CapabilitySet caps) {
  if (security.privileged || security.seccomp == SeccompMode::kUnconfined) {
    return std::optional<SeccompProgram>();
  }
  SeccompProfile profile;
  if (security.seccomp == SeccompMode::kProfile) {
    IMGTOOL_ASSIGN_OR_RETURN(profile, LoadSeccompProfile(security.seccomp_profile));
  } else {
    if (std::optional<SeccompProgram> embedded = EmbeddedDefaultSeccompProgram(caps)) {
      return embedded;
    }
    profile = DefaultSeccompProfile();
  }
  IMGTOOL_ASSIGN_OR_RETURN(SeccompProgram program,
                           CompileSeccompProfileCached(profile, caps, security.seccomp_cache_dir));
  return std::optional<SeccompProgram>(std::move(program));
}

Status WriteSmallFile(const fs::path& path, std::string_view content) {
  // Fresh per-container files, bound read-write into one container: no fsync.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd) return ErrnoError("write " + path.string());
  return WriteAll(fd.get(), content).Wrap("write " + path.string());
}

}  // namespace

std::string HostsFileContent(const std::string& hostname, const std::string& container_ip,
                             const std::vector<std::string>& extra_hosts) {
  std::string out = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
  if (!hostname.empty()) {
    out += (container_ip.empty() ? std::string("127.0.1.1") : container_ip) + "\t" + hostname + "\n";
  }
  for (const std::string& entry : extra_hosts) {
    // --add-host NAME:IP; the IP may hold ':' itself (IPv6), the name not.
    size_t colon = entry.find(':');
    if (colon == std::string::npos) continue;
    out += entry.substr(colon + 1) + "\t" + entry.substr(0, colon) + "\n";
  }
  return out;
}

std::string ResolvConfContent(std::string_view host_resolv_conf,
                              const std::vector<std::string>& dns, bool host_network) {
  if (host_network) return std::string(host_resolv_conf);
  std::string out;
  if (!dns.empty()) {
    for (const std::string& server : dns) out += "nameserver " + server + "\n";
  }
  size_t start = 0;
  bool kept_server = !dns.empty();
  while (start < host_resolv_conf.size()) {
    size_t end = host_resolv_conf.find('\n', start);
    if (end == std::string_view::npos) end = host_resolv_conf.size();
    std::string_view line = host_resolv_conf.substr(start, end - start);
    start = end + 1;
    if (line.starts_with("nameserver")) {
      if (!dns.empty()) continue;
      std::string_view server = line.substr(10);
      while (!server.empty() && (server.front() == ' ' || server.front() == '\t')) {
        server.remove_prefix(1);
      }
      if (server.starts_with("127.") || server == "::1" || server.empty()) continue;
      kept_server = true;
    }
    out += line;
    out += '\n';
  }
  if (!kept_server) out += "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";
  return out;
}

CgroupResources CgroupResourcesOf(const ContainerSpec& spec) {
  CgroupResources resources = spec.resources;
  resources.all_devices = spec.security.privileged;
  return resources;
}

std::unique_ptr<EarlyStart> EarlyStart::Begin(const std::string& container_id,
                                               const CgroupResources& resources,
                                               bool network_namespace) {
  std::unique_ptr<EarlyStart> early(new EarlyStart());
  early->id_ = container_id;
  early->resources_ = resources;
  // The threads start with every signal blocked (a SIGINT is forwarded to
  // the container by the caller).
  AllSignalsBlocked blocked;
  try {
    // The namespace takes longest (the kernel sets up every per-network
    // subsystem): on a thread of its own, begun first. Two threads beside
    // the caller's were 0.7 ms faster a run than one doing both in turn.
    if (network_namespace) {
      early->netns_thread_ = std::thread([e = early.get()] { e->MakeNetworkNamespace(); });
    }
    early->thread_ = std::thread([e = early.get()] { e->made_ = e->Make(); });
  } catch (const std::system_error& error) {
    LogDebug("cgroup of container ", container_id, " made in line: ", error.what());
    if (!early->thread_.joinable()) early->made_ = early->Make();
  }
  return early;
}

Status EarlyStart::Make() {
  IMGTOOL_ASSIGN_OR_RETURN(layout_, DetectCgroupLayout());
  // Cgroups left by an imgtool that was killed go now, not only at gc.
  if (auto cleaned = CleanupUnclaimedCgroups(layout_, kCgroupClaimDir); !cleaned) {
    LogWarning(cleaned.error().ToString());
  }
  // Without a claim (no writable /run) only gc cleans up after a crash.
  if (auto claim = CgroupClaim::Acquire(kCgroupClaimDir, id_); claim) {
    claim_ = std::move(*claim);
  } else {
    LogDebug(claim.error().ToString());
  }
  IMGTOOL_ASSIGN_OR_RETURN(manager_, NewCgroupManager(id_, layout_));
  IMGTOOL_TRY(manager_->Create(resources_).Wrap("container " + id_ + ": cgroup"));
  if (Status prepared = manager_->PrepareSelfEntry(); !prepared) {
    LogDebug("container ", id_, ": cgroup entry not prepared: ", prepared.error().ToString());
  }
  return OkStatus();
}

void EarlyStart::MakeNetworkNamespace() {
  // Not having one only means the clone makes it.
  // The thread ends right after: it may stay in the namespace.
  Result<UniqueFd> netns = NewNetworkNamespaceFd(/*stay=*/true);
  if (netns) {
    netns_ = std::move(*netns);
  } else {
    LogDebug("container ", id_, ": no network namespace made ahead: ", netns.error().ToString());
  }
}

Status EarlyStart::Wait() {
  for (std::thread* thread : {&thread_, &netns_thread_}) {
    if (thread->joinable()) thread->join();
  }
  return made_;
}

EarlyStart::~EarlyStart() {
  (void)Wait();
  if (!manager_) return;  // taken over by a container, or never made
  if (Status s = manager_->Destroy(); !s) {
    LogWarning("container ", id_, ": cgroup: ", s.error().ToString());
  } else {
    claim_.Release();
  }
}


Result<std::unique_ptr<Container>> Container::Start(const ContainerSpec& spec, const Stdio& stdio,
                                                    std::unique_ptr<EarlyStart> early) {
  IMGTOOL_TRY(ValidateContainerSpec(spec));
  std::unique_ptr<Container> c(new Container());
  c->id_ = spec.id;
  c->stdio_ = stdio;
  c->terminal_ = spec.process.terminal;
  c->hostname_ = spec.hostname.empty() ? spec.id.substr(0, 12) : spec.hostname;
  c->extra_hosts_ = spec.extra_hosts;
  c->network_mode_ = spec.network.mode;
  const bool own_netns = spec.network.mode != NetworkMode::kHost;
  const bool userns = spec.userns == UserNamespaceMode::kAuto;
  // The overlay is made meanwhile (in a user namespace it is idmapped, after
  // the plans below).
  RootfsAhead rootfs_ahead;
  if (!userns) rootfs_ahead.Begin(spec.rootfs_mounts);

  IMGTOOL_ASSIGN_OR_RETURN(
      CapabilitySet caps,
      ComputeCapabilities(spec.security.privileged, spec.security.cap_add, spec.security.cap_drop,
                          CapabilitySet::OfThisProcess()));
  IMGTOOL_ASSIGN_OR_RETURN(std::optional<SeccompProgram> seccomp, SeccompFor(spec.security, caps));
  const IdMappings* mappings = userns ? &spec.id_mappings : nullptr;
  if (userns) {
    if (mappings->uids.empty() || mappings->gids.empty()) {
      return InvalidArgumentError("container " + spec.id + ": a user namespace needs id maps");
    }
    if (!spec.userns_claim.empty()) {
      IMGTOOL_ASSIGN_OR_RETURN(c->userns_claim_,
                               UsernsClaim::Join(spec.userns_claim).Wrap("container " + spec.id));
    }
  }
  IMGTOOL_ASSIGN_OR_RETURN(UserSpec user_spec, ParseUserSpec(spec.process.user));

  bool mount_cgroup2 = false;
  std::vector<CgroupV1View> cgroup_v1;
  UniqueFd cgroup_fd;
  UniqueFd premade_netns;
  if (spec.own_cgroup) {
    CgroupResources resources = CgroupResourcesOf(spec);
    if (!early) early = EarlyStart::Begin(spec.id, resources, false);
    if (early->id_ != spec.id || early->resources_ != resources) {
      return InvalidArgumentError("container " + spec.id +
                                  ": the early cgroup was made for another container or limits");
    }
    // The layout is cached (the early thread detects it first); the cgroup
    // and the network namespace are waited for only right before the clone,
    // so that the overlay mount and the plans below are made meanwhile.
    IMGTOOL_ASSIGN_OR_RETURN(CgroupLayout layout, DetectCgroupLayout());
    mount_cgroup2 = layout.version == CgroupVersion::kV2;
    // A user namespace may not mount v1 hierarchies: /sys/fs/cgroup stays
    // sysfs's empty dir there.
    if (layout.version == CgroupVersion::kV1 && !userns) cgroup_v1 = CgroupV1Views(layout);
  }
  if (spec.network.mode == NetworkMode::kBridge) {
    NetworkSpec network_spec = spec.network;
    if (network_spec.container_id.empty()) network_spec.container_id = spec.id;
    if (network_spec.hostname.empty()) network_spec.hostname = c->hostname_;
    IMGTOOL_ASSIGN_OR_RETURN(c->network_, NewNetwork(network_spec));
  }

  RootfsOptions rootfs_options;
  rootfs_options.privileged = spec.security.privileged;
  rootfs_options.read_only = spec.read_only_rootfs;
  rootfs_options.new_netns = own_netns;
  rootfs_options.user_namespace = userns;
  rootfs_options.mount_cgroup2 = mount_cgroup2;
  rootfs_options.cgroup_v1 = std::move(cgroup_v1);
  rootfs_options.volumes = spec.volumes;
  rootfs_options.tmpfs = spec.tmpfs;
  rootfs_options.cwd = spec.process.cwd;
  if (spec.write_etc_files) {
    if (spec.state_dir.empty()) {
      // /run: a tmpfs on most machines, and cleaned at boot.
      std::error_code ec;
      fs::create_directories(kRunDir, ec);
      IMGTOOL_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create(kRunDir, "run-"));
      c->state_dir_ = dir.path();
      c->temp_state_dir_.emplace(std::move(dir));
    } else {
      std::error_code ec;
      fs::create_directories(spec.state_dir, ec);
      if (ec) return ErrnoError("create state dir " + spec.state_dir.string(), ec.value());
      c->state_dir_ = spec.state_dir;
    }
    for (const char* name : {"hosts", "hostname", "resolv.conf"}) {
      rootfs_options.file_binds.emplace_back((c->state_dir_ / name).string(),
                                             std::string("/etc/") + name);
    }
    // Bridge mode knows the address only after Attach, and rewrites them in
    // place then; the binds the parent prepares need the files now.
    IMGTOOL_TRY(c->WriteEtcFiles());
  }

  IMGTOOL_ASSIGN_OR_RETURN(RootfsPlan rootfs_plan, BuildRootfsPlan(rootfs_options));
  ResolvedUser user;
  // In a user namespace the image's files must belong to the container's
  // root: mounted rootfs layers are idmapped with the container's mapping,
  // taken from a user namespace made for that.
  UniqueFd idmap_userns;
  MountIdmap idmap;
  if (userns && !spec.rootfs_mounts.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(idmap_userns, NewUserNamespaceFd(*mappings).Wrap(
                                               "container " + spec.id + ": idmapped rootfs"));
    idmap.userns_fd = idmap_userns.get();
    idmap.root_uid = HostIdOfRoot(mappings->uids);
    idmap.root_gid = HostIdOfRoot(mappings->gids);
  }
  IMGTOOL_ASSIGN_OR_RETURN(
      UniqueFd tree,
      DetachRootfs(
          spec.rootfs_mounts, spec.rootfs_dir,
          [&](int root_fd) -> Status {
            IMGTOOL_ASSIGN_OR_RETURN(user, ResolveUser(root_fd, user_spec));
            return PrepareRootfsPlan(&rootfs_plan, root_fd);
          },
          idmap_userns ? &idmap : nullptr, rootfs_ahead.Take())
          .Wrap("container " + spec.id));
  idmap_userns.reset();

  UniqueFd dev_null;
  if (stdio.in < 0 && !spec.process.terminal) {
    dev_null.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!dev_null) return ErrnoError("open /dev/null");
  }
  ProcessPlanInput input;
  input.process = &spec.process;
  input.hostname = c->hostname_;
  input.user = user;
  input.caps = caps;
  input.no_new_privileges = spec.security.no_new_privileges;
  input.seccomp = std::move(seccomp);
  input.stdio = stdio;
  input.dev_null = dev_null.get();
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<ProcessPlan> process_plan,
                           BuildProcessPlan(std::move(input)));

  if (early) {
    IMGTOOL_TRY(early->Wait());
    c->cgroup_ = std::move(early->manager_);
    c->cgroup_claim_ = std::move(early->claim_);
    // Only a container without a user namespace can join one made ahead:
    // the namespace must belong to the container's user namespace.
    if (own_netns && !userns) premade_netns = std::move(early->netns_);
    early.reset();
    Result<UniqueFd> fd = c->cgroup_->DirFdForCloneIntoCgroup();
    if (fd) {
      cgroup_fd = std::move(*fd);
    } else if (fd.error().code() != ErrorCode::kNotFound) {
      return std::move(fd).error().Wrap("container " + spec.id + ": cgroup");
    }
  }
  // v1: the child moves itself into the cgroup with files opened ahead; in a
  // user namespace it may not write them, and the parent adds it instead.
  std::vector<UniqueFd> cgroup_entry;
  if (c->cgroup_ && !cgroup_fd && !userns) cgroup_entry = c->cgroup_->TakeSelfEntryFiles();
  IMGTOOL_ASSIGN_OR_RETURN(
      std::optional<ThreadInCgroup> thread_in_cgroup,
      EnterForClone(cgroup_entry.empty() ? c->cgroup_.get() : nullptr, cgroup_fd.get())
          .Wrap("container " + spec.id + ": cgroup"));
  ChildPlan plan;
  const bool join_cgroup =
      c->cgroup_ && !cgroup_fd && !thread_in_cgroup && cgroup_entry.empty();
  plan.wait_before_setup = userns;
  // With a pids limit, the thread in the cgroup raised pids.max by one for
  // itself and restores it when it leaves: the command starts only after
  // that, or the restore could undo a write of its own (--privileged).
  const bool restore_pids_max = thread_in_cgroup && spec.resources.pids_limit.has_value();
  plan.wait_before_exec =
      !userns && (join_cgroup || c->network_ != nullptr || restore_pids_max);
  plan.cgroup_namespace_after_wait = plan.wait_before_exec && join_cgroup;
  plan.user_namespace = userns;
  for (const UniqueFd& file : cgroup_entry) plan.cgroup_entry_fds.push_back(file.get());
  plan.bring_up_loopback = own_netns && !c->network_ && !premade_netns;
  plan.netns_fd = premade_netns.get();
  plan.hostname = c->hostname_;
  plan.rootfs = std::move(rootfs_plan);
  plan.tree_fd = tree.get();
  plan.process = process_plan.get();
  plan.init = spec.init;

  IMGTOOL_ASSIGN_OR_RETURN(SyncChannelPair channel, NewSyncChannel());

  sigemptyset(&c->forwarded_);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&c->forwarded_, sig);
  if (spec.process.terminal) sigaddset(&c->forwarded_, SIGWINCH);
  ::pthread_sigmask(SIG_BLOCK, &c->forwarded_, &c->saved_mask_);
  c->mask_changed_ = true;

  const uint64_t clone_flags = ContainerCloneFlags(own_netns && !premade_netns, userns);
  // The plain case shares the memory until the exec instead of copying it:
  // nothing to wait for between clone and exec, no --init (its reaper never
  // execs), no terminal, no CLONE_INTO_CGROUP (clone3 only), and no memory
  // limit (an OOM kill of the child before its exec would take the process
  // it shares the memory with, imgtool, along).
  const bool vfork = !plan.wait_before_setup && !plan.wait_before_exec && !plan.init &&
                     !plan.user_namespace && !spec.process.terminal && !cgroup_fd &&
                     !spec.resources.memory_bytes;
  ClonedChild child;
  if (vfork) {
    plan.unshare_time_namespace = (clone_flags & CLONE_NEWTIME) != 0;
    VforkChildArgs args{&plan, channel.parent.fd(), &channel.child};
    IMGTOOL_ASSIGN_OR_RETURN(child, VforkChild(clone_flags & ~uint64_t{CLONE_NEWTIME},
                                               VforkContainerChild, &args)
                                        .Wrap("container " + spec.id));
  } else {
    IMGTOOL_ASSIGN_OR_RETURN(child, CloneChild(clone_flags, cgroup_fd.get())
                                        .Wrap("container " + spec.id));
    if (child.pid == 0) ContainerChildMain(plan, channel.parent.fd(), &channel.child);
  }
  c->pid_ = child.pid;
  c->pidfd_ = std::move(child.pidfd);
  channel.child.Close();
  if (thread_in_cgroup) {
    if (Status left = thread_in_cgroup->Leave(); !left) {
      PidfdSendSignal(c->pidfd_.get(), SIGKILL);
      return std::move(left).error().Wrap("container " + spec.id + ": cgroup");
    }
  }

  if (plan.wait_before_setup || plan.wait_before_exec) {
    // A step that fails here may have failed because the child did (it
    // reports why and exits): that report is the better error.
    auto wrap = [&](Status status) -> Status {
      if (!status) {
        PidfdSendSignal(c->pidfd_.get(), SIGKILL);
        while (true) {
          Result<ChildReport> report = channel.parent.ReceiveReport();
          if (!report || report->kind == ChildReportKind::kExecuted) break;
          if (report->kind == ChildReportKind::kSetupFailed) {
            return report->ToError().Wrap("container " + spec.id);
          }
        }
      }
      return std::move(status.Wrap("container " + spec.id));
    };
    if (userns) {
      if (spec.rootfs_mounts.empty()) {
        // Files of a plain-directory rootfs appear with their host owners in
        // the container when the tree can be idmapped (mounted rootfs layers
        // were idmapped above).
        std::string ns_path = StrCat("/proc/", c->pid_, "/ns/user");
        UniqueFd userns_fd(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (userns_fd) {
          struct mount_attr attr {};
          attr.attr_set = MOUNT_ATTR_IDMAP;
          attr.userns_fd = static_cast<uint64_t>(userns_fd.get());
          if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH | AT_RECURSIVE, &attr,
                        sizeof(attr)) != 0) {
            LogDebug("container ", spec.id, ": rootfs not idmapped: ", std::strerror(errno));
          }
        }
      }
      IMGTOOL_TRY(wrap(WriteIdMappings(c->pid_, *mappings)));
    }
    if (join_cgroup) IMGTOOL_TRY(wrap(c->cgroup_->AddProcess(c->pid_)));
    if (c->network_) {
      // The child may not have joined a namespace made ahead yet: that
      // one is attached by its own fd, never by the child's pid.
      Result<UniqueFd> netns =
          premade_netns ? Result<UniqueFd>(std::move(premade_netns)) : OpenNetnsOfPid(c->pid_);
      if (!netns) IMGTOOL_TRY(wrap(std::move(netns).error()));
      Result<NetworkAttachment> attachment = c->network_->Attach(netns->get());
      if (!attachment) IMGTOOL_TRY(wrap(std::move(attachment).error()));
      c->attachment_ = std::move(*attachment);
      c->network_attached_ = true;
      if (spec.write_etc_files) IMGTOOL_TRY(wrap(c->WriteEtcFiles()));
    }
    IMGTOOL_TRY(wrap(channel.parent.AllowChildToContinue()));
  }
  tree.reset();
  IMGTOOL_TRY(c->ReceiveChildReports(&channel.parent).Wrap("container " + spec.id));
  return c;
}

Result<std::unique_ptr<Container>> Container::Exec(pid_t container_pid,
                                                   const std::string& cgroup_id,
                                                   const ProcessSpec& process,
                                                   const SecuritySpec& security,
                                                   const Stdio& stdio) {
  std::string what = StrCat("exec in container process ", container_pid);
  if (process.args.empty() || process.args[0].empty()) {
    return InvalidArgumentError(what + ": no command to run");
  }
  std::unique_ptr<Container> c(new Container());
  c->stdio_ = stdio;
  c->terminal_ = process.terminal;
  UniqueFd target(static_cast<int>(::syscall(SYS_pidfd_open, container_pid, 0)));
  if (!target) return ErrnoError(what + ": pidfd_open");
  IMGTOOL_ASSIGN_OR_RETURN(uint64_t join_flags, NamespacesToJoin(container_pid));

  IMGTOOL_ASSIGN_OR_RETURN(CapabilitySet caps,
                           ComputeCapabilities(security.privileged, security.cap_add,
                                               security.cap_drop, CapabilitySet::OfThisProcess()));
  IMGTOOL_ASSIGN_OR_RETURN(std::optional<SeccompProgram> seccomp, SeccompFor(security, caps));
  IMGTOOL_ASSIGN_OR_RETURN(UserSpec user_spec, ParseUserSpec(process.user));
  std::string root_path = StrCat("/proc/", container_pid, "/root");
  UniqueFd root(::open(root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return ErrnoError(what + ": open " + root_path);
  IMGTOOL_ASSIGN_OR_RETURN(ResolvedUser user, ResolveUser(root.get(), user_spec));

  std::unique_ptr<CgroupManager> cgroup;
  UniqueFd cgroup_fd;
  if (!cgroup_id.empty()) {
    IMGTOOL_ASSIGN_OR_RETURN(CgroupLayout layout, DetectCgroupLayout());
    IMGTOOL_ASSIGN_OR_RETURN(cgroup, NewCgroupManager(cgroup_id, layout));
    Result<UniqueFd> fd = cgroup->DirFdForCloneIntoCgroup();
    if (fd) cgroup_fd = std::move(*fd);
  }

  UniqueFd dev_null;
  if (stdio.in < 0 && !process.terminal) {
    dev_null.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!dev_null) return ErrnoError("open /dev/null");
  }
  ProcessPlanInput input;
  input.process = &process;
  input.user = user;
  input.caps = caps;
  input.no_new_privileges = security.no_new_privileges;
  input.seccomp = std::move(seccomp);
  input.stdio = stdio;
  input.dev_null = dev_null.get();
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<ProcessPlan> plan, BuildProcessPlan(std::move(input)));

  IMGTOOL_ASSIGN_OR_RETURN(SyncChannelPair channel, NewSyncChannel());
  sigemptyset(&c->forwarded_);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) sigaddset(&c->forwarded_, sig);
  if (process.terminal) sigaddset(&c->forwarded_, SIGWINCH);
  ::pthread_sigmask(SIG_BLOCK, &c->forwarded_, &c->saved_mask_);
  c->mask_changed_ = true;

  IMGTOOL_ASSIGN_OR_RETURN(std::optional<ThreadInCgroup> thread_in_cgroup,
                           EnterForClone(cgroup.get(), cgroup_fd.get()).Wrap(what + ": cgroup"));
  bool wait_for_parent = cgroup && !cgroup_fd && !thread_in_cgroup;
  IMGTOOL_ASSIGN_OR_RETURN(ClonedChild helper, CloneChild(0, cgroup_fd.get()).Wrap(what));
  if (helper.pid == 0) {
    ExecHelperMain(target.get(), join_flags, wait_for_parent, *plan, &channel.parent,
                   &channel.child);
  }
  channel.child.Close();
  // The helper is reaped whatever happens below.
  auto reap_helper = [&helper]() {
    siginfo_t info{};
    ::waitid(kPidfdIdType, static_cast<id_t>(helper.pidfd.get()), &info, WEXITED);
  };
  if (thread_in_cgroup) {
    if (Status left = thread_in_cgroup->Leave(); !left) {
      PidfdSendSignal(helper.pidfd.get(), SIGKILL);
      reap_helper();
      return std::move(left).error().Wrap(what + ": cgroup");
    }
  }
  if (wait_for_parent) {
    Status joined = cgroup->AddProcess(helper.pid);
    if (!joined) {
      PidfdSendSignal(helper.pidfd.get(), SIGKILL);
      reap_helper();
      return std::move(joined).error().Wrap(what + ": join the cgroup");
    }
    if (Status s = channel.parent.AllowChildToContinue(); !s) {
      reap_helper();
      return std::move(s).error().Wrap(what);
    }
  }
  // The process starts as the helper's sibling (CLONE_PARENT) and shares the
  // channel: its own reports (pty, exec failure) may overtake the helper's pid
  // message, so they wait in `early` until the pid is known.
  std::vector<ChildReport> early;
  std::optional<ChildReport> pid_report;
  while (!pid_report) {
    Result<ChildReport> report = channel.parent.ReceiveReport();
    if (!report) {
      reap_helper();
      return std::move(report).error().Wrap(what);
    }
    if (report->kind == ChildReportKind::kPid) {
      pid_report = std::move(*report);
    } else if (report->kind == ChildReportKind::kExecuted) {
      // End of stream without a pid: the helper failed before starting it.
      reap_helper();
      for (ChildReport& failure : early) {
        if (failure.kind == ChildReportKind::kSetupFailed) return failure.ToError().Wrap(what);
      }
      return InternalError(what + ": the helper ended without starting the process");
    } else {
      early.push_back(std::move(*report));
    }
  }
  reap_helper();
  if (!pid_report->fd) return InternalError(what + ": the helper sent no pidfd");
  c->pid_ = pid_report->pid;
  c->pidfd_ = std::move(pid_report->fd);
  for (ChildReport& report : early) {
    Result<bool> done = c->HandleChildReport(std::move(report));
    if (!done) return std::move(done).error().Wrap(what);
    if (*done) return c;
  }
  IMGTOOL_TRY(c->ReceiveChildReports(&channel.parent).Wrap(what));
  return c;
}

Status Container::ReceiveChildReports(ParentChannel* channel) {
  while (true) {
    IMGTOOL_ASSIGN_OR_RETURN(ChildReport report, channel->ReceiveReport());
    IMGTOOL_ASSIGN_OR_RETURN(bool done, HandleChildReport(std::move(report)));
    if (done) return OkStatus();
  }
}

Result<bool> Container::HandleChildReport(ChildReport report) {
  switch (report.kind) {
    case ChildReportKind::kExecuted:
      return true;
    case ChildReportKind::kPtyMaster: {
      IMGTOOL_ASSIGN_OR_RETURN(RawTerminalMode mode, RawTerminalMode::Enter(stdio_.in));
      raw_mode_.emplace(std::move(mode));
      relay_.emplace(std::move(report.fd), stdio_.in, stdio_.out);
      return false;
    }
    case ChildReportKind::kSetupFailed:
      return report.ToError();
    case ChildReportKind::kExecFailed: {
      ExitStatus status;
      status.message = report.ToError().ToString();
      exec_failure_ = std::move(status);
      return false;
    }
    case ChildReportKind::kPid:
      return InternalError("unexpected pid report from the container");
  }
  return InternalError("unknown report from the container");
}

Status Container::WriteEtcFiles() {
  IMGTOOL_TRY(WriteSmallFile(state_dir_ / "hostname", hostname_ + "\n"));
  IMGTOOL_TRY(WriteSmallFile(state_dir_ / "hosts",
                             HostsFileContent(hostname_, attachment_.ip, extra_hosts_)));
  Result<std::string> host_resolv = ReadFileToString("/etc/resolv.conf", 1u << 20);
  std::string resolv = ResolvConfContent(host_resolv ? *host_resolv : std::string(),
                                         attachment_.dns, network_mode_ == NetworkMode::kHost);
  return WriteSmallFile(state_dir_ / "resolv.conf", resolv);
}

Status Container::Signal(int sig) {
  if (reaped_ || !pidfd_) return FailedPreconditionError("container " + id_ + " is not running");
  if (PidfdSendSignal(pidfd_.get(), sig) != 0) {
    return ErrnoError(StrCat("send signal ", sig, " to container ", id_));
  }
  return OkStatus();
}

ExitStatus Container::StatusFromWait(const siginfo_t& info) {
  ExitStatus status;
  if (info.si_code == CLD_EXITED) {
    status.exit_code = info.si_status;
  } else {
    status.signal = info.si_status;
    status.exit_code = 128 + info.si_status;
  }
  if (exec_failure_) status.message = exec_failure_->message;
  if (cgroup_ && (status.signal == SIGKILL || status.exit_code == 128 + SIGKILL)) {
    Result<bool> oom = cgroup_->OomKilled();
    if (oom && *oom) {
      status.oom_killed = true;
      status.exit_code = 128 + SIGKILL;
      status.message = "container " + id_ + ": the OOM killer ended the command (memory limit)";
    }
  }
  return status;
}

Result<ExitStatus> Container::Wait() {
  if (reaped_) return FailedPreconditionError("container " + id_ + " was already waited for");
  UniqueFd signals(::signalfd(-1, &forwarded_, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!signals) return ErrnoError("signalfd");
  siginfo_t info{};
  std::vector<struct pollfd> fds;
  while (true) {
    fds.clear();
    fds.push_back({pidfd_.get(), POLLIN, 0});
    fds.push_back({signals.get(), POLLIN, 0});
    if (relay_) relay_->AddPollFds(&fds);
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("wait for container " + id_);
    }
    if (fds[1].revents & POLLIN) {
      struct signalfd_siginfo received {};
      while (::read(signals.get(), &received, sizeof(received)) == sizeof(received)) {
        int sig = static_cast<int>(received.ssi_signo);
        if (sig == SIGWINCH) {
          if (relay_) relay_->ResizeFromInput();
        } else {
          PidfdSendSignal(pidfd_.get(), sig);
        }
      }
    }
    if (relay_) {
      Status relayed = relay_->HandleEvents(fds);
      if (!relayed) LogWarning("container ", id_, ": ", relayed.error().ToString());
    }
    if (fds[0].revents & POLLIN) {
      if (::waitid(kPidfdIdType, static_cast<id_t>(pidfd_.get()), &info, WEXITED) != 0) {
        if (errno == EINTR) continue;
        return ErrnoError("reap container " + id_);
      }
      reaped_ = true;
      break;
    }
  }
  if (relay_) {
    Status drained = relay_->Drain();
    if (!drained) LogWarning("container ", id_, ": ", drained.error().ToString());
  }
  ExitStatus status = StatusFromWait(info);
  Cleanup();
  return status;
}

void Container::RestoreSignalMask() {
  if (!mask_changed_) return;
  // Signals that arrived after the container ended stay for the caller.
  ::pthread_sigmask(SIG_SETMASK, &saved_mask_, nullptr);
  mask_changed_ = false;
}

void Container::Cleanup() {
  if (pidfd_ && !reaped_) {
    PidfdSendSignal(pidfd_.get(), SIGKILL);
    siginfo_t info{};
    while (::waitid(kPidfdIdType, static_cast<id_t>(pidfd_.get()), &info, WEXITED) != 0 &&
           errno == EINTR) {
    }
    reaped_ = true;
  }
  relay_.reset();
  raw_mode_.reset();
  if (network_ && network_attached_) {
    if (Status s = network_->Detach(); !s) {
      LogWarning("container ", id_, ": network: ", s.error().ToString());
    }
    network_attached_ = false;
  }
  if (cgroup_) {
    // The cgroup's dirs go on a thread of their own while the caller goes on
    // (removing the container's files, say); the destructor waits for it.
    auto destroy = [id = id_, cgroup = std::move(cgroup_),
                    claim = std::move(cgroup_claim_)]() mutable {
      if (Status s = cgroup->Destroy(); !s) {
        LogWarning("container ", id, ": cgroup: ", s.error().ToString());
      } else {
        claim.Release();
      }
    };
    try {
      // Forwarded signals are still blocked here, and stay so in the thread.
      cgroup_destroyer_ = std::thread(std::move(destroy));
    } catch (const std::system_error&) {
      destroy();
    }
  }
  temp_state_dir_.reset();
  RestoreSignalMask();
}

Container::~Container() {
  Cleanup();
  if (cgroup_destroyer_.joinable()) cgroup_destroyer_.join();
}

Result<ExitStatus> RunContainer(const ContainerSpec& spec, const Stdio& stdio) {
  IMGTOOL_ASSIGN_OR_RETURN(std::unique_ptr<Container> container, Container::Start(spec, stdio));
  return container->Wait();
}

}  // namespace imgtool::runner
