// Which of a command's options the command line can name.
//
// CLI11 builds a whole object for every option it is given (its names split
// and checked against every option added before it): about 7 µs each, and
// `imgtool run` has 33 of them, a quarter of its user-space start-up (the
// command is timed against crun). A command line names few of them, so run
// adds only those it may name. Adding one too many changes nothing; leaving
// out one the line names would, so the filter errs towards adding: help
// (which lists them all), and a filter made with All(), add every one.
#pragma once

#include <bitset>
#include <string>
#include <string_view>
#include <vector>

namespace imgtool::cli {

class OptionFilter {
 public:
  // Wants every option.
  static OptionFilter All();
  // From the words of a command line. Every word that starts with '-' counts,
  // wherever it stands (a word after the image is the container's, and only
  // makes an option be added for nothing).
  static OptionFilter FromArgs(int argc, const char* const* argv);

  // True if the line may name an option called `names` (CLI11's spelling,
  // "-e,--env"): a word "--env" or "--env=VALUE", or a word of one dash whose
  // letters hold 'e' ("-e", "-eVALUE", "-ite").
  bool Wants(std::string_view names) const;

 private:
  bool all_ = false;
  std::vector<std::string> long_names_;
  std::bitset<256> short_letters_;
};

}  // namespace imgtool::cli
