#include "cli/option_filter.h"

#include <algorithm>

namespace imgtool::cli {

OptionFilter OptionFilter::All() {
  OptionFilter filter;
  filter.all_ = true;
  return filter;
}

OptionFilter OptionFilter::FromArgs(int argc, const char* const* argv) {
  OptionFilter filter;
  for (int i = 1; i < argc; ++i) {
    std::string_view word = argv[i];
    if (word == "--help") return All();
    if (word.starts_with("--")) {
      filter.long_names_.emplace_back(word.substr(0, word.find('=')));
    } else if (word.starts_with("-")) {
      for (char c : word.substr(1)) filter.short_letters_.set(static_cast<unsigned char>(c));
    }
  }
  return filter;
}

bool OptionFilter::Wants(std::string_view names) const {
  if (all_) return true;
  while (!names.empty()) {
    size_t comma = names.find(',');
    std::string_view name = names.substr(0, comma);
    names = comma == std::string_view::npos ? std::string_view() : names.substr(comma + 1);
    if (name.starts_with("--")) {
      if (std::find(long_names_.begin(), long_names_.end(), name) != long_names_.end()) {
        return true;
      }
    } else if (name.size() == 2 && name[0] == '-') {
      if (short_letters_.test(static_cast<unsigned char>(name[1]))) return true;
    } else {
      return true;  // a spelling this filter does not know: added to be safe
    }
  }
  return false;
}

}  // namespace imgtool::cli
