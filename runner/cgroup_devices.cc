#include "runner/cgroup_devices.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

#include "common/unique_fd.h"

namespace imgtool::runner {

namespace {

constexpr unsigned kAllAccess = kDeviceMknod | kDeviceRead | kDeviceWrite;

bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn insn{};
  insn.code = code;
  insn.dst_reg = dst & 0xf;
  insn.src_reg = src & 0xf;
  insn.off = off;
  insn.imm = imm;
  return insn;
}

// Registers: r1 the context (struct bpf_cgroup_dev_ctx), then
enum : uint8_t { kR0 = 0, kCtx = 1, kAccess = 2, kType = 3, kMajor = 4, kMinor = 5, kScratch = 6 };

}  // namespace

const std::vector<DeviceRule>& DefaultDeviceRules() {
  static const std::vector<DeviceRule> kRules = {
      {'c', -1, -1, kDeviceMknod}, {'b', -1, -1, kDeviceMknod}, {'c', 1, 3, kAllAccess},  // null
      {'c', 1, 5, kAllAccess},                                                            // zero
      {'c', 1, 7, kAllAccess},                                                            // full
      {'c', 1, 8, kAllAccess},                                                            // random
      {'c', 1, 9, kAllAccess},                                                            // urandom
      {'c', 5, 0, kAllAccess},                                                            // tty
      {'c', 5, 1, kAllAccess},                                                            // console
      {'c', 5, 2, kAllAccess},                                                            // ptmx
      {'c', 136, -1, kAllAccess},                                                         // pts/*
      {'c', 10, 200, kAllAccess},                                                         // net/tun
  };
  return kRules;
}

std::string DeviceRuleText(const DeviceRule& rule) {
  auto number = [](int64_t n) { return n < 0 ? std::string("*") : std::to_string(n); };
  std::string text(1, rule.type);
  text += ' ';
  text += number(rule.major);
  text += ':';
  text += number(rule.minor);
  text += ' ';
  if (rule.access & kDeviceRead) text += 'r';
  if (rule.access & kDeviceWrite) text += 'w';
  if (rule.access & kDeviceMknod) text += 'm';
  return text;
}

std::vector<bpf_insn> DeviceFilterProgram(const std::vector<DeviceRule>& rules) {
  std::vector<bpf_insn> program;
  // access_type is (access << 16) | type; major and minor follow it.
  program.push_back(
      Insn(BPF_LDX | BPF_MEM | BPF_W, kAccess, kCtx, offsetof(bpf_cgroup_dev_ctx, access_type), 0));
  program.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, kType, kAccess, 0, 0));
  program.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, kType, 0, 0, 0xffff));
  program.push_back(Insn(BPF_ALU64 | BPF_RSH | BPF_K, kAccess, 0, 0, 16));
  program.push_back(
      Insn(BPF_LDX | BPF_MEM | BPF_W, kMajor, kCtx, offsetof(bpf_cgroup_dev_ctx, major), 0));
  program.push_back(
      Insn(BPF_LDX | BPF_MEM | BPF_W, kMinor, kCtx, offsetof(bpf_cgroup_dev_ctx, minor), 0));
  for (const DeviceRule& rule : rules) {
    // One block per rule: each check that fails jumps past the block's end,
    // to the next rule; a block passed through allows.
    std::vector<bpf_insn> block;
    std::vector<size_t> to_next;  // jumps whose target is the block's end
    if (rule.type != 'a') {
      int32_t type = rule.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR;
      to_next.push_back(block.size());
      block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, kType, 0, 0, type));
    }
    if ((rule.access & kAllAccess) != kAllAccess) {
      // Every access asked for must be in the rule's.
      block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_X, kScratch, kAccess, 0, 0));
      block.push_back(Insn(BPF_ALU64 | BPF_AND | BPF_K, kScratch, 0, 0,
                           static_cast<int32_t>(kAllAccess & ~rule.access)));
      to_next.push_back(block.size());
      block.push_back(Insn(BPF_JMP | BPF_JNE | BPF_K, kScratch, 0, 0, 0));
    }
    if (rule.major >= 0) {
      to_next.push_back(block.size());
      block.push_back(
          Insn(BPF_JMP | BPF_JNE | BPF_K, kMajor, 0, 0, static_cast<int32_t>(rule.major)));
    }
    if (rule.minor >= 0) {
      to_next.push_back(block.size());
      block.push_back(
          Insn(BPF_JMP | BPF_JNE | BPF_K, kMinor, 0, 0, static_cast<int32_t>(rule.minor)));
    }
    block.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, kR0, 0, 0, 1));
    block.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    for (size_t at : to_next) block[at].off = static_cast<int16_t>(block.size() - at - 1);
    program.insert(program.end(), block.begin(), block.end());
  }
  program.push_back(Insn(BPF_ALU64 | BPF_MOV | BPF_K, kR0, 0, 0, 0));
  program.push_back(Insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
  return program;
}

Status AttachDeviceFilter(int dir_fd) {
  std::vector<bpf_insn> program = DeviceFilterProgram(DefaultDeviceRules());
  static const char kLicense[] = "Apache-2.0";
  union bpf_attr load;
  std::memset(&load, 0, sizeof load);
  load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  load.insns = reinterpret_cast<uint64_t>(program.data());
  load.insn_cnt = static_cast<uint32_t>(program.size());
  load.license = reinterpret_cast<uint64_t>(kLicense);
  UniqueFd prog(static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &load, sizeof load)));
  if (!prog) return ErrnoError("load the cgroup device filter (BPF)");
  union bpf_attr attach;
  std::memset(&attach, 0, sizeof attach);
  attach.target_fd = static_cast<uint32_t>(dir_fd);
  attach.attach_bpf_fd = static_cast<uint32_t>(prog.get());
  attach.attach_type = BPF_CGROUP_DEVICE;
  attach.attach_flags = BPF_F_ALLOW_MULTI;
  if (::syscall(SYS_bpf, BPF_PROG_ATTACH, &attach, sizeof attach) != 0) {
    return ErrnoError("attach the device filter to the cgroup");
  }
  return OkStatus();
}

}  // namespace imgtool::runner
