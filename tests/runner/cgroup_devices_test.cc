// The device list and the v2 BPF program built from it. The program runs here
// in a small interpreter of the instructions it uses; the kernel runs it in
// cgroup_devices_privileged_test.cc.
#include "runner/cgroup_devices.h"

#include <gtest/gtest.h>

#include <cstring>
#include <optional>

namespace imgtool::runner {
namespace {

// Runs `program` on one access; nullopt for an instruction it does not know
// or a run that falls off the end.
std::optional<uint64_t> Execute(const std::vector<bpf_insn>& program, uint32_t type,
                                uint32_t access, uint32_t major, uint32_t minor) {
  bpf_cgroup_dev_ctx ctx{};
  ctx.access_type = (access << 16) | type;
  ctx.major = major;
  ctx.minor = minor;
  uint64_t r[11] = {};
  size_t pc = 0;
  for (int steps = 0; pc < program.size() && steps < 10000; ++steps) {
    const bpf_insn& insn = program[pc++];
    uint64_t& dst = r[insn.dst_reg];
    switch (insn.code) {
      case BPF_LDX | BPF_MEM | BPF_W: {
        if (insn.src_reg != 1 || insn.off < 0 || insn.off + 4 > int{sizeof ctx})
          return std::nullopt;
        uint32_t value;
        std::memcpy(&value, reinterpret_cast<const char*>(&ctx) + insn.off, 4);
        dst = value;
        break;
      }
      case BPF_ALU64 | BPF_MOV | BPF_X:
        dst = r[insn.src_reg];
        break;
      case BPF_ALU64 | BPF_MOV | BPF_K:
        dst = static_cast<uint64_t>(int64_t{insn.imm});
        break;
      case BPF_ALU64 | BPF_AND | BPF_K:
        dst &= static_cast<uint64_t>(int64_t{insn.imm});
        break;
      case BPF_ALU64 | BPF_RSH | BPF_K:
        dst >>= insn.imm;
        break;
      case BPF_JMP | BPF_JNE | BPF_K:
        if (dst != static_cast<uint64_t>(int64_t{insn.imm})) pc += insn.off;
        break;
      case BPF_JMP | BPF_EXIT:
        return r[0];
      default:
        return std::nullopt;
    }
  }
  return std::nullopt;
}

constexpr uint32_t kChar = BPF_DEVCG_DEV_CHAR;
constexpr uint32_t kBlock = BPF_DEVCG_DEV_BLOCK;
constexpr uint32_t kRead = BPF_DEVCG_ACC_READ;
constexpr uint32_t kWrite = BPF_DEVCG_ACC_WRITE;
constexpr uint32_t kMknod = BPF_DEVCG_ACC_MKNOD;

TEST(CgroupDevicesTest, DefaultRulesAreDockers) {
  std::vector<std::string> texts;
  for (const DeviceRule& rule : DefaultDeviceRules()) texts.push_back(DeviceRuleText(rule));
  EXPECT_EQ(texts,
            (std::vector<std::string>{"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm",
                                      "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm",
                                      "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"}));
}

TEST(CgroupDevicesTest, ProgramAllowsTheListAndNothingElse) {
  const std::vector<bpf_insn> program = DeviceFilterProgram(DefaultDeviceRules());
  auto allowed = [&](uint32_t type, uint32_t access, uint32_t major, uint32_t minor) {
    std::optional<uint64_t> result = Execute(program, type, access, major, minor);
    EXPECT_TRUE(result.has_value());
    return result.value_or(0) == 1;
  };
  // The listed nodes, opened any way.
  for (auto [major, minor] : {std::pair{1u, 3u},
                              {1u, 5u},
                              {1u, 7u},
                              {1u, 8u},
                              {1u, 9u},
                              {5u, 0u},
                              {5u, 1u},
                              {5u, 2u},
                              {10u, 200u}}) {
    EXPECT_TRUE(allowed(kChar, kRead | kWrite, major, minor)) << major << ":" << minor;
    EXPECT_TRUE(allowed(kChar, kRead, major, minor)) << major << ":" << minor;
  }
  EXPECT_TRUE(allowed(kChar, kRead | kWrite, 136, 0));
  EXPECT_TRUE(allowed(kChar, kWrite, 136, 4095));
  // Any node may be made, block ones too; not opened.
  EXPECT_TRUE(allowed(kBlock, kMknod, 8, 0));
  EXPECT_TRUE(allowed(kChar, kMknod, 1, 1));
  EXPECT_FALSE(allowed(kBlock, kRead, 8, 0));  // a disk
  EXPECT_FALSE(allowed(kBlock, kMknod | kRead, 8, 0));
  EXPECT_FALSE(allowed(kChar, kRead, 1, 1));            // /dev/mem
  EXPECT_FALSE(allowed(kChar, kRead | kWrite, 1, 11));  // /dev/kmsg
  EXPECT_FALSE(allowed(kChar, kRead, 4, 0));            // tty0
  EXPECT_FALSE(allowed(kChar, kRead, 10, 201));         // the minor counts
  EXPECT_FALSE(allowed(kBlock, kRead, 1, 3));           // a block 1:3 is not null
}

TEST(CgroupDevicesTest, RuleForEveryTypeAndPartialAccess) {
  const std::vector<bpf_insn> program =
      DeviceFilterProgram({{'a', 7, -1, kRead}, {'b', -1, 2, kRead | kWrite}});
  EXPECT_EQ(Execute(program, kChar, kRead, 7, 9), 1u);
  EXPECT_EQ(Execute(program, kBlock, kRead, 7, 0), 1u);
  EXPECT_EQ(Execute(program, kChar, kWrite, 7, 9), 0u);
  EXPECT_EQ(Execute(program, kBlock, kRead | kWrite, 3, 2), 1u);
  EXPECT_EQ(Execute(program, kChar, kRead, 3, 2), 0u);
  EXPECT_EQ(Execute(program, kBlock, kMknod, 3, 2), 0u);
}

TEST(CgroupDevicesTest, EmptyListDeniesAll) {
  EXPECT_EQ(Execute(DeviceFilterProgram({}), kChar, kRead, 1, 3), 0u);
}

}  // namespace
}  // namespace imgtool::runner
