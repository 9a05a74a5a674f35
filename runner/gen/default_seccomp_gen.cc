// Build-time tool: compiles imgtool's default seccomp profile for docker's
// default capabilities (runner/seccomp_default.cc, caps.h) and writes it as a
// C++ source file that imgtool links in (see EmbeddedDefaultSeccompProgram).
// Usage: imgtool_default_seccomp_gen OUT.cc
#include <cstdio>
#include <string>

#include "common/file_util.h"
#include "common/log.h"
#include "runner/caps.h"
#include "runner/seccomp.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.cc\n", argv[0]);
    return 2;
  }
  using namespace imgtool;
  using namespace imgtool::runner;
  const CapabilitySet caps = DefaultCapabilities();
  Result<SeccompProgram> program = CompileSeccompProfile(DefaultSeccompProfile(), caps);
  if (!program) {
    std::fprintf(stderr, "%s: %s\n", argv[0], program.error().ToString().c_str());
    return 1;
  }
  std::string out =
      "// Generated at build time by imgtool_default_seccomp_gen from\n"
      "// runner/seccomp_default.cc: imgtool's default profile for docker's default\n"
      "// capabilities. Do not edit.\n"
      "#include <linux/filter.h>\n\n"
      "extern \"C\" {\n"
      "extern const unsigned long long imgtool_default_seccomp_caps;\n"
      "extern const unsigned imgtool_default_seccomp_length;\n"
      "extern const struct sock_filter imgtool_default_seccomp_program[];\n";
  out += StrCat("const unsigned long long imgtool_default_seccomp_caps = ", caps.mask(), "ull;\n");
  out += StrCat("const unsigned imgtool_default_seccomp_length = ",
                program->instructions.size(), ";\n");
  out += "const struct sock_filter imgtool_default_seccomp_program[] = {\n";
  for (const struct sock_filter& insn : program->instructions) {
    out += StrCat("    {", insn.code, ", ", static_cast<unsigned>(insn.jt), ", ",
                  static_cast<unsigned>(insn.jf), ", ", insn.k, "u},\n");
  }
  out += "};\n}\n";
  // Rewritten only when it changes, so that imgtool is not relinked for nothing.
  Result<std::string> old = ReadFileToString(argv[1], 1u << 20);
  if (old && *old == out) return 0;
  if (Status written = WriteFileAtomic(argv[1], out); !written) {
    std::fprintf(stderr, "%s: %s\n", argv[0], written.error().ToString().c_str());
    return 1;
  }
  return 0;
}
