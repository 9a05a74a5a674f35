#include "cli/app.h"

int main(int argc, char** argv) { return imgtool::cli::Main(argc, argv); }
