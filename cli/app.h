#pragma once

namespace imgtool::cli {

// Parses the command line, runs one subcommand, prints any error once, and
// returns the process exit code.
int Main(int argc, char** argv);

}  // namespace imgtool::cli
