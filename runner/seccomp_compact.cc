#include "runner/seccomp_compact.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <set>

namespace imgtool::runner {

namespace {

constexpr uint32_t kNrOffset = offsetof(struct seccomp_data, nr);
constexpr uint32_t kArchOffset = offsetof(struct seccomp_data, arch);
constexpr uint32_t kKill = SECCOMP_RET_KILL_PROCESS;
constexpr size_t kNone = std::numeric_limits<size_t>::max();
constexpr uint32_t kMaxU32 = std::numeric_limits<uint32_t>::max();

bool IsJump(const sock_filter& f) { return BPF_CLASS(f.code) == BPF_JMP; }
bool IsJa(const sock_filter& f) { return IsJump(f) && BPF_OP(f.code) == BPF_JA; }
bool IsRet(const sock_filter& f) { return BPF_CLASS(f.code) == BPF_RET; }
bool IsLoadOf(const sock_filter& f, uint32_t offset) {
  return f.code == (BPF_LD | BPF_W | BPF_ABS) && f.k == offset;
}
// A comparison of A with a constant, what a dispatch on the syscall number
// is made of (with unconditional jumps).
bool IsRangeCompare(const sock_filter& f) {
  if (!IsJump(f) || BPF_SRC(f.code) != BPF_K) return false;
  uint16_t op = BPF_OP(f.code);
  return op == BPF_JEQ || op == BPF_JGT || op == BPF_JGE;
}
bool Compare(const sock_filter& f, uint32_t a) {
  switch (BPF_OP(f.code)) {
    case BPF_JEQ:
      return a == f.k;
    case BPF_JGT:
      return a > f.k;
    default:
      return a >= f.k;  // BPF_JGE
  }
}

// Where control may go after `pc`: none after a return.
void Successors(std::span<const sock_filter> program, size_t pc, std::vector<size_t>* out) {
  out->clear();
  const sock_filter& f = program[pc];
  if (IsRet(f)) return;
  if (IsJa(f)) {
    out->push_back(pc + 1 + f.k);
  } else if (IsJump(f)) {
    out->push_back(pc + 1 + f.jt);
    out->push_back(pc + 1 + f.jf);
  } else {
    out->push_back(pc + 1);
  }
}

// One dispatch: the compares reached from `entry` (the instruction after a
// load of the syscall number), and the ranges of numbers by where they
// leave it: range i is [intervals[i].lo, intervals[i + 1].lo).
struct Interval {
  uint32_t lo;
  size_t exit;  // the pc the dispatch leaves to
};
struct Dispatch {
  size_t entry = 0;
  std::vector<size_t> members;
  std::vector<uint32_t> boundaries;
  std::vector<Interval> intervals;
};

size_t ExitFor(std::span<const sock_filter> program, const std::vector<bool>& member, size_t entry,
               uint32_t nr) {
  size_t pc = entry;
  while (pc < program.size() && member[pc]) {
    const sock_filter& f = program[pc];
    if (IsJa(f)) {
      pc += 1 + f.k;
    } else {
      pc += 1 + (Compare(f, nr) ? f.jt : f.jf);
    }
  }
  return pc;
}

std::optional<Dispatch> FindDispatch(std::span<const sock_filter> program,
                                     const std::vector<std::vector<size_t>>& predecessors,
                                     size_t entry) {
  Dispatch dispatch;
  dispatch.entry = entry;
  std::vector<bool> member(program.size(), false);
  std::vector<size_t> stack = {entry};
  std::vector<size_t> next;
  while (!stack.empty()) {
    size_t pc = stack.back();
    stack.pop_back();
    if (member[pc]) continue;
    const sock_filter& f = program[pc];
    if (!IsJump(f)) continue;  // a way out of the dispatch
    // A test of bits, or against X, is not a range: not for us.
    if (!IsJa(f) && !IsRangeCompare(f)) return std::nullopt;
    member[pc] = true;
    dispatch.members.push_back(pc);
    Successors(program, pc, &next);
    stack.insert(stack.end(), next.begin(), next.end());
  }
  // Only the entry may be reached from outside.
  for (size_t pc : dispatch.members) {
    if (pc == entry) continue;
    for (size_t from : predecessors[pc]) {
      if (!member[from]) return std::nullopt;
    }
  }
  std::set<uint32_t> boundaries = {0};
  for (size_t pc : dispatch.members) {
    const sock_filter& f = program[pc];
    if (IsJa(f)) continue;
    if (BPF_OP(f.code) != BPF_JGT) boundaries.insert(f.k);
    if (BPF_OP(f.code) != BPF_JGE && f.k != kMaxU32) boundaries.insert(f.k + 1);
  }
  dispatch.boundaries.assign(boundaries.begin(), boundaries.end());
  for (uint32_t lo : dispatch.boundaries) {
    size_t exit = ExitFor(program, member, entry, lo);
    if (dispatch.intervals.empty() || dispatch.intervals.back().exit != exit) {
      dispatch.intervals.push_back({lo, exit});
    }
  }
  // The search takes one compare per range boundary (one jump for a single
  // range): worth it only when that is fewer instructions.
  size_t size = std::max<size_t>(dispatch.intervals.size() - 1, 1);
  if (size >= dispatch.members.size()) return std::nullopt;
  return dispatch;
}

// A jump target while the new program is laid out: a slot of it, or an
// instruction of the old one (mapped once everything has its place).
struct Target {
  bool is_slot = false;
  size_t value = 0;
};
struct Slot {
  sock_filter f{};
  Target jt, jf;  // conditional jumps
  Target ja;      // unconditional jumps
  size_t old_pc = kNone;
};

// How far a conditional jump reaches (jt and jf are 8 bits).
constexpr size_t kMaxJump = 255;

class Layout {
 public:
  // With `leaf_slots`, each range of a search ends in an instruction of its
  // own, next to the compare that chose it: a copy of the return the range
  // leaves to, or a jump there (32-bit). Longer, but no compare has to
  // reach past the searches and argument checks between it and the
  // instruction the range leaves to (libseccomp's filters for several
  // architectures need that).
  Layout(std::span<const sock_filter> program, bool leaf_slots)
      : program_(program), leaf_slots_(leaf_slots), new_pc_of_old_(program.size(), kNone) {}

  void Keep(size_t pc) {
    new_pc_of_old_[pc] = slots_.size();
    Slot slot;
    slot.f = program_[pc];
    slot.old_pc = pc;
    const sock_filter& f = program_[pc];
    if (IsJa(f)) {
      slot.ja = {false, pc + 1 + f.k};
    } else if (IsJump(f)) {
      slot.jt = {false, pc + 1 + f.jt};
      slot.jf = {false, pc + 1 + f.jf};
    }
    slots_.push_back(slot);
  }

  // The search for `dispatch`, in its entry's place: a balanced tree of
  // "A >= lo" over the ranges, leading to where each range left the old
  // dispatch.
  void Search(const Dispatch& dispatch) {
    new_pc_of_old_[dispatch.entry] = slots_.size();
    const std::vector<Interval>& ranges = dispatch.intervals;
    if (ranges.size() == 1) {
      Slot slot;
      slot.f = BPF_STMT(BPF_JMP | BPF_JA, 0);
      slot.ja = {false, ranges.front().exit};
      slots_.push_back(slot);
      return;
    }
    Tree(ranges, 0, ranges.size());
  }

  // The finished program; nullopt if a jump does not fit (or goes back).
  std::optional<std::vector<sock_filter>> Resolve() const {
    std::vector<sock_filter> out;
    out.reserve(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& slot = slots_[i];
      sock_filter f = slot.f;
      if (IsJa(f)) {
        std::optional<size_t> offset = Offset(i, slot.ja);
        if (!offset || *offset > kMaxU32) return std::nullopt;
        f.k = static_cast<uint32_t>(*offset);
      } else if (IsJump(f)) {
        std::optional<size_t> jt = Offset(i, slot.jt);
        std::optional<size_t> jf = Offset(i, slot.jf);
        if (!jt || !jf || *jt > kMaxJump || *jf > kMaxJump) return std::nullopt;
        f.jt = static_cast<uint8_t>(*jt);
        f.jf = static_cast<uint8_t>(*jf);
      } else if (!IsRet(f)) {
        // Falls through: the old next instruction must come next here too.
        size_t next = slot.old_pc + 1;
        if (next >= new_pc_of_old_.size() || new_pc_of_old_[next] != i + 1) return std::nullopt;
      }
      out.push_back(f);
    }
    return out;
  }

 private:
  // Instructions a search over ranges [first, end) takes.
  size_t TreeSize(size_t first, size_t end) const {
    if (end - first == 1) return leaf_slots_ ? 1 : 0;
    size_t mid = first + (end - first) / 2;
    size_t below = TreeSize(first, mid);
    return 1 + (below > kMaxJump ? 1 : 0) + below + TreeSize(mid, end);
  }

  // The compare, then the search below it, then the one above it; a
  // compare whose "above" lies out of reach jumps there through the
  // instruction after it.
  Target Tree(const std::vector<Interval>& ranges, size_t first, size_t end) {
    if (end - first == 1) {
      size_t exit = ranges[first].exit;
      if (!leaf_slots_) return {false, exit};
      Slot leaf;
      if (IsRet(program_[exit])) {
        leaf.f = program_[exit];
      } else {
        leaf.f = BPF_STMT(BPF_JMP | BPF_JA, 0);
        leaf.ja = {false, exit};
      }
      slots_.push_back(leaf);
      return {true, slots_.size() - 1};
    }
    size_t mid = first + (end - first) / 2;
    size_t index = slots_.size();
    slots_.push_back(Slot{});
    slots_[index].f = BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, ranges[mid].lo, 0, 0);
    size_t trampoline = kNone;
    if (TreeSize(first, mid) > kMaxJump) {
      trampoline = slots_.size();
      slots_.push_back(Slot{});
      slots_[trampoline].f = BPF_STMT(BPF_JMP | BPF_JA, 0);
    }
    Target below = Tree(ranges, first, mid);
    Target above = Tree(ranges, mid, end);
    slots_[index].jf = below;
    if (trampoline != kNone) {
      slots_[trampoline].ja = above;
      slots_[index].jt = {true, trampoline};
    } else {
      slots_[index].jt = above;
    }
    return {true, index};
  }

  std::optional<size_t> Offset(size_t from, Target target) const {
    size_t to = target.is_slot
                    ? target.value
                    : (target.value < new_pc_of_old_.size() ? new_pc_of_old_[target.value] : kNone);
    if (to == kNone || to <= from) return std::nullopt;
    return to - from - 1;
  }

  std::span<const sock_filter> program_;
  bool leaf_slots_;
  std::vector<size_t> new_pc_of_old_;
  std::vector<Slot> slots_;
};

// Runs both programs where they could differ: every architecture value the
// filter compares with, every syscall number on either side of a dispatch
// boundary (and all the small ones), and argument values made of the
// constants the rest of the filter compares with.
bool SameVerdicts(std::span<const sock_filter> a, std::span<const sock_filter> b,
                  const std::vector<Dispatch>& dispatches) {
  std::set<uint32_t> arches = {0, kMaxU32};
  std::set<uint32_t> constants = {0, 1, kMaxU32};
  std::vector<bool> in_dispatch(a.size(), false);
  for (const Dispatch& dispatch : dispatches) {
    for (size_t pc : dispatch.members) in_dispatch[pc] = true;
  }
  for (size_t pc = 0; pc < a.size(); ++pc) {
    const sock_filter& f = a[pc];
    bool compares = IsJump(f) && !IsJa(f) && BPF_SRC(f.code) == BPF_K;
    if (compares && pc > 0 && IsLoadOf(a[pc - 1], kArchOffset)) {
      arches.insert(f.k);
    } else if (!in_dispatch[pc] &&
               (compares || (BPF_CLASS(f.code) == BPF_ALU && BPF_SRC(f.code) == BPF_K))) {
      constants.insert(f.k);
      constants.insert(f.k - 1);
      constants.insert(f.k + 1);
      constants.insert(~f.k);
    }
  }
  std::set<uint32_t> numbers = {kMaxU32, 0x3fffffff, 0x40000000, 0x40000001};
  for (uint32_t nr = 0; nr < 1024; ++nr) numbers.insert(nr);
  for (const Dispatch& dispatch : dispatches) {
    for (uint32_t lo : dispatch.boundaries) {
      numbers.insert(lo - 1);
      numbers.insert(lo);
      numbers.insert(lo + 1);
    }
  }
  struct seccomp_data data {};
  for (uint32_t arch : arches) {
    data.arch = arch;
    for (uint32_t nr : numbers) {
      data.nr = static_cast<int>(nr);
      for (uint32_t value : constants) {
        uint64_t word = (uint64_t{value} << 32) | value;
        for (auto& arg : data.args) arg = word;
        if (RunSeccompBpf(a, data) != RunSeccompBpf(b, data)) return false;
        // The low half alone (a 32-bit argument, the high half zero).
        for (auto& arg : data.args) arg = value;
        if (RunSeccompBpf(a, data) != RunSeccompBpf(b, data)) return false;
      }
    }
  }
  return true;
}

}  // namespace

uint32_t RunSeccompBpf(std::span<const sock_filter> program, const struct seccomp_data& data) {
  unsigned char bytes[sizeof(struct seccomp_data)];
  std::memcpy(bytes, &data, sizeof(bytes));
  uint32_t a = 0;
  uint32_t x = 0;
  uint32_t mem[BPF_MEMWORDS] = {};
  size_t pc = 0;
  while (pc < program.size()) {
    const sock_filter& f = program[pc++];
    uint32_t operand = BPF_SRC(f.code) == BPF_X ? x : f.k;
    switch (BPF_CLASS(f.code)) {
      case BPF_LD:
      case BPF_LDX: {
        uint32_t value = 0;
        switch (BPF_MODE(f.code)) {
          case BPF_ABS:
            if (BPF_CLASS(f.code) != BPF_LD || BPF_SIZE(f.code) != BPF_W || f.k % 4 != 0 ||
                f.k > sizeof(bytes) - 4) {
              return kKill;
            }
            std::memcpy(&value, bytes + f.k, 4);
            break;
          case BPF_LEN:
            value = sizeof(bytes);
            break;
          case BPF_IMM:
            value = f.k;
            break;
          case BPF_MEM:
            if (f.k >= BPF_MEMWORDS) return kKill;
            value = mem[f.k];
            break;
          default:
            return kKill;
        }
        (BPF_CLASS(f.code) == BPF_LD ? a : x) = value;
        break;
      }
      case BPF_ST:
      case BPF_STX:
        if (f.k >= BPF_MEMWORDS) return kKill;
        mem[f.k] = BPF_CLASS(f.code) == BPF_ST ? a : x;
        break;
      case BPF_ALU:
        switch (BPF_OP(f.code)) {
          case BPF_ADD:
            a += operand;
            break;
          case BPF_SUB:
            a -= operand;
            break;
          case BPF_MUL:
            a *= operand;
            break;
          case BPF_DIV:
            if (operand == 0) return 0;  // the kernel ends the filter with 0
            a /= operand;
            break;
          case BPF_MOD:
            if (operand == 0) return 0;
            a %= operand;
            break;
          case BPF_OR:
            a |= operand;
            break;
          case BPF_AND:
            a &= operand;
            break;
          case BPF_XOR:
            a ^= operand;
            break;
          case BPF_LSH:
            a <<= (operand & 31);
            break;
          case BPF_RSH:
            a >>= (operand & 31);
            break;
          case BPF_NEG:
            a = 0u - a;
            break;
          default:
            return kKill;
        }
        break;
      case BPF_JMP:
        if (BPF_OP(f.code) == BPF_JA) {
          pc += f.k;
          break;
        }
        switch (BPF_OP(f.code)) {
          case BPF_JEQ:
            pc += a == operand ? f.jt : f.jf;
            break;
          case BPF_JGT:
            pc += a > operand ? f.jt : f.jf;
            break;
          case BPF_JGE:
            pc += a >= operand ? f.jt : f.jf;
            break;
          case BPF_JSET:
            pc += (a & operand) != 0 ? f.jt : f.jf;
            break;
          default:
            return kKill;
        }
        break;
      case BPF_RET:
        if (BPF_RVAL(f.code) == BPF_K) return f.k;
        if (BPF_RVAL(f.code) == BPF_A) return a;
        return kKill;
      case BPF_MISC:
        if (BPF_MISCOP(f.code) == BPF_TAX) {
          x = a;
        } else {
          a = x;
        }
        break;
      default:
        return kKill;
    }
  }
  return kKill;  // ran off the end
}

std::optional<std::vector<sock_filter>> CompactSyscallDispatch(
    std::span<const sock_filter> program) {
  const size_t size = program.size();
  std::vector<std::vector<size_t>> predecessors(size);
  std::vector<size_t> next;
  for (size_t pc = 0; pc < size; ++pc) {
    Successors(program, pc, &next);
    for (size_t to : next) {
      if (to >= size) return std::nullopt;  // not a filter seccomp would take
      predecessors[to].push_back(pc);
    }
  }
  std::vector<Dispatch> dispatches;
  std::vector<bool> claimed(size, false);
  for (size_t pc = 1; pc < size; ++pc) {
    if (claimed[pc] || !IsLoadOf(program[pc - 1], kNrOffset) || !IsRangeCompare(program[pc])) {
      continue;
    }
    std::optional<Dispatch> dispatch = FindDispatch(program, predecessors, pc);
    if (!dispatch) continue;
    if (std::any_of(dispatch->members.begin(), dispatch->members.end(),
                    [&](size_t member) { return claimed[member]; })) {
      continue;
    }
    for (size_t member : dispatch->members) claimed[member] = true;
    dispatches.push_back(std::move(*dispatch));
  }
  if (dispatches.empty()) return std::nullopt;

  // Each range's compare jumping straight to where it leaves to is the
  // shortest; when a jump does not reach, each range gets an instruction.
  std::optional<std::vector<sock_filter>> compact;
  for (bool leaf_slots : {false, true}) {
    Layout layout(program, leaf_slots);
    size_t next_dispatch = 0;
    for (size_t pc = 0; pc < size; ++pc) {
      if (next_dispatch < dispatches.size() && dispatches[next_dispatch].entry == pc) {
        layout.Search(dispatches[next_dispatch++]);
      } else if (!claimed[pc]) {
        layout.Keep(pc);
      }
    }
    compact = layout.Resolve();
    if (compact) break;
  }
  if (!compact || compact->size() >= size) return std::nullopt;
  if (!SameVerdicts(program, *compact, dispatches)) return std::nullopt;
  return compact;
}

}  // namespace imgtool::runner
