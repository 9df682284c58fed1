// ackxfer-fast: entry point; dispatches to the recv, send and bench subcommands.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli_common.h"
#include "exit_codes.h"
#include "io/fd_table.h"

namespace {

// Enough for a sender's window and a busy receiver; the table costs 8 bytes per slot.
constexpr unsigned kPresizedFds = 65536;

const char kUsageText[] =
    "Usage:\n"
    "  ackxfer-fast recv  [--dir DIR] [--listen ADDR] [--port N] [--data-port N] [--threads N]\n"
    "  ackxfer-fast send  --to HOST[:PORT] [--streams N] [--threads N] [--json]\n"
    "                     [--retry-for SECONDS] PATH...\n"
    "  ackxfer-fast bench [--json]\n"
    "  ackxfer-fast --version\n"
    "\n"
    "Moves files and directory trees between Linux hosts over TCP, verifying every file with\n"
    "XXH3-128 before it appears under its final name.\n"
    "Run 'ackxfer-fast <command> --help' for a command's options and examples.\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace ackxfer::cli;
  if (argc < 2) {
    std::fputs(kUsageText, stderr);
    return ackxfer::cli::kUsage;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsageText, stdout);
    std::fputs("\n", stdout);
    std::fputs(exit_code_help(), stdout);
    return kOk;
  }
  if (cmd == "--version" || cmd == "-V" || cmd == "version") {
    std::fputs(version_text().c_str(), stdout);
    return kOk;
  }
  // Before any thread exists: a large fd limit, and a table already sized for it, so opening
  // thousands of files later never stalls on growing the table (engine/io/fd_table.h).
  unsigned limit = ackxfer::raise_fd_limit();
  ackxfer::presize_fd_table(std::min(limit, kPresizedFds));
  // Subcommands see their own name as argv[0].
  if (cmd == "recv") return recv_command(argc - 1, argv + 1);
  if (cmd == "send") return send_command(argc - 1, argv + 1);
  if (cmd == "bench") return bench_command(argc - 1, argv + 1);
  std::fprintf(stderr, "ackxfer-fast: unknown command '%s'\n\n%s", cmd.c_str(), kUsageText);
  return ackxfer::cli::kUsage;
}
