// The taskmaster executable: everything is in the taskmaster_cli library (cli/commands.h).
#include "cli/commands.h"

int main(int argc, char** argv) { return taskmaster::cli::run(argc, argv); }
