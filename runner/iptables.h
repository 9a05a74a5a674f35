// NAT and forwarding rules through the iptables tools. Netlink for nftables or
// xtables is a large job for a handful of rules, so imgtool runs `iptables`,
// batching a container's rules into one `iptables-restore --noflush` call.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace imgtool::runner {

// One rule, as the arguments after the table: {"-A", "POSTROUTING", "-s", ...}.
struct IptablesRule {
  std::string table;  // "nat" or "filter"
  std::vector<std::string> args;
};

// The same rule with its first word (-A/-I) replaced by -D, for removal.
IptablesRule DeletionOf(const IptablesRule& rule);

// The iptables-restore script that applies `rules` (grouped per table).
std::string IptablesRestoreScript(const std::vector<IptablesRule>& rules);

// Applies all rules in one transaction (`iptables-restore -w --noflush`).
Status ApplyIptablesRules(const std::vector<IptablesRule>& rules);

// Removes rules: one transaction first; when that fails (some rule is gone
// already), one `iptables -D` per rule, ignoring those that are missing.
Status RemoveIptablesRules(const std::vector<IptablesRule>& rules);

// `iptables -C`: whether the rule (given with -A or -I) is present.
Result<bool> IptablesRuleExists(const IptablesRule& rule);

// Runs argv (PATH lookup) with `input` on stdin. NotFound when the tool is not
// installed; Internal with its stderr when it exits non-zero.
struct ToolOutput {
  int exit_code = 0;
  std::string err;
};
Result<ToolOutput> RunTool(const std::vector<std::string>& argv, std::string_view input = "");

}  // namespace imgtool::runner
