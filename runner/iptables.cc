#include "runner/iptables.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <map>

#include "common/log.h"
#include "common/unique_fd.h"

extern char** environ;

namespace imgtool::runner {

namespace {

std::string Quote(const std::string& word) {
  if (!word.empty() && word.find_first_of(" \t\"'\\") == std::string::npos) return word;
  std::string quoted = "\"";
  for (char c : word) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

std::string RuleText(const IptablesRule& rule) {
  std::string text = "-t " + rule.table;
  for (const std::string& arg : rule.args) text += " " + Quote(arg);
  return text;
}

std::vector<std::string> IptablesArgv(const IptablesRule& rule) {
  std::vector<std::string> argv = {"iptables", "-w", "-t", rule.table};
  argv.insert(argv.end(), rule.args.begin(), rule.args.end());
  return argv;
}

struct FileActions {
  posix_spawn_file_actions_t actions;
  FileActions() { posix_spawn_file_actions_init(&actions); }
  ~FileActions() { posix_spawn_file_actions_destroy(&actions); }
};

}  // namespace

IptablesRule DeletionOf(const IptablesRule& rule) {
  IptablesRule deletion = rule;
  if (deletion.args.size() >= 2 && (deletion.args[0] == "-A" || deletion.args[0] == "-I")) {
    deletion.args[0] = "-D";
    // "-I CHAIN N": the position is not part of the rule.
    if (rule.args[0] == "-I" && deletion.args.size() >= 3 &&
        deletion.args[2].find_first_not_of("0123456789") == std::string::npos) {
      deletion.args.erase(deletion.args.begin() + 2);
    }
  }
  return deletion;
}

std::string IptablesRestoreScript(const std::vector<IptablesRule>& rules) {
  std::map<std::string, std::string> per_table;
  for (const IptablesRule& rule : rules) {
    std::string& text = per_table[rule.table];
    for (size_t i = 0; i < rule.args.size(); ++i) {
      if (i > 0) text += ' ';
      text += Quote(rule.args[i]);
    }
    text += '\n';
  }
  std::string script;
  for (const auto& [table, text] : per_table) script += "*" + table + "\n" + text + "COMMIT\n";
  return script;
}

Result<ToolOutput> RunTool(const std::vector<std::string>& argv, std::string_view input) {
  int in_pipe[2];
  int err_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd in_read(in_pipe[0]), in_write(in_pipe[1]);
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) return ErrnoError("pipe");
  UniqueFd err_read(err_pipe[0]), err_write(err_pipe[1]);

  FileActions files;
  posix_spawn_file_actions_adddup2(&files.actions, in_read.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&files.actions, err_write.get(), STDERR_FILENO);
  posix_spawn_file_actions_addopen(&files.actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int err = ::posix_spawnp(&pid, args[0], &files.actions, nullptr, args.data(), environ);
  if (err != 0) {
    if (err == ENOENT) {
      return NotFoundError(StrCat("`", argv[0], "` is not installed (needed for bridge NAT)"));
    }
    return ErrnoError(StrCat("run ", argv[0]), err);
  }
  in_read.reset();
  err_write.reset();

  // Feed stdin and drain stderr together, so neither side blocks the other.
  std::string err_text;
  size_t written = 0;
  if (input.empty()) in_write.reset();
  while (err_read.valid()) {
    pollfd fds[2] = {{err_read.get(), POLLIN, 0}, {in_write.get(), POLLOUT, 0}};
    int count = in_write.valid() ? 2 : 1;
    if (::poll(fds, count, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (count == 2 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = ::write(in_write.get(), input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if (n < 0 || written == input.size()) in_write.reset();
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[4096];
      ssize_t n = ::read(err_read.get(), buf, sizeof(buf));
      if (n > 0) {
        if (err_text.size() < 65536) err_text.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        err_read.reset();
      }
    }
  }
  in_write.reset();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoError(StrCat("wait for ", argv[0]));
  }
  ToolOutput output;
  output.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  while (!err_text.empty() && (err_text.back() == '\n' || err_text.back() == ' ')) {
    err_text.pop_back();
  }
  output.err = std::move(err_text);
  return output;
}

Status ApplyIptablesRules(const std::vector<IptablesRule>& rules) {
  if (rules.empty()) return OkStatus();
  IMGTOOL_ASSIGN_OR_RETURN(ToolOutput out, RunTool({"iptables-restore", "-w", "--noflush"},
                                                   IptablesRestoreScript(rules)));
  if (out.exit_code != 0) {
    return InternalError(StrCat("iptables-restore failed (exit ", out.exit_code, "): ", out.err,
                                "; rules: ", RuleText(rules.front()),
                                rules.size() > 1 ? " ..." : ""));
  }
  return OkStatus();
}

Status RemoveIptablesRules(const std::vector<IptablesRule>& rules) {
  if (rules.empty()) return OkStatus();
  std::vector<IptablesRule> deletions;
  for (const IptablesRule& rule : rules) deletions.push_back(DeletionOf(rule));
  IMGTOOL_ASSIGN_OR_RETURN(ToolOutput batch, RunTool({"iptables-restore", "-w", "--noflush"},
                                                     IptablesRestoreScript(deletions)));
  if (batch.exit_code == 0) return OkStatus();
  // The transaction fails as a whole when any rule is missing: go one by one.
  for (const IptablesRule& deletion : deletions) {
    IMGTOOL_ASSIGN_OR_RETURN(ToolOutput one, RunTool(IptablesArgv(deletion)));
    if (one.exit_code != 0) LogDebug("iptables rule already gone: ", RuleText(deletion));
  }
  return OkStatus();
}

Result<bool> IptablesRuleExists(const IptablesRule& rule) {
  IptablesRule check = DeletionOf(rule);
  if (!check.args.empty()) check.args[0] = "-C";
  IMGTOOL_ASSIGN_OR_RETURN(ToolOutput out, RunTool(IptablesArgv(check)));
  if (out.exit_code == 0) return true;
  if (out.exit_code == 1) return false;
  return InternalError(StrCat("iptables -C ", RuleText(check), ": ", out.err));
}

}  // namespace imgtool::runner
