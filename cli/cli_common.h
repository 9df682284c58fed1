// Pieces every subcommand uses: the stderr log sink, signal blocking, version text, sizes.
#pragma once

#include <csignal>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <boost/program_options.hpp>

#include "log.h"
#include "tls/tls_channel.h"

namespace ackxfer {
class SharedSecret;
}

namespace ackxfer::cli {

// Messages go to stderr as "ackxfer-fast: <level>: <message>", one whole line per write so
// threads never interleave inside a line.
Logger make_stderr_logger(LogLevel level);
// One whole line to stderr (a newline is added if missing), under the same lock as the log and
// the status line, which is redrawn after it.
void write_stderr_line(const std::string& line);
// A status line kept at the bottom of a terminal and redrawn in place (send's progress): log
// lines written meanwhile clear it first and redraw it after, so they never garble each other.
void status_line_set(const std::string& text);
void status_line_clear();
LogLevel parse_log_level(const std::string& s);  // throws Failure

// Blocks SIGINT and SIGTERM in the calling thread (call before starting threads, which
// inherit the mask) so that a dedicated thread can sigwait for them.
sigset_t block_termination_signals();

std::string version_text();

// "1.23 GB", "512 KiB"-style helpers for human output.
std::string human_bytes(double bytes);
std::string human_rate(double bytes_per_second);

// Loads --secret-file (throws Failure naming the problem) and logs a warning if the file is
// readable by others or the secret is short.
std::shared_ptr<const SharedSecret> load_secret(const std::string& path, const Logger& log);

// --tls-cert, --tls-key, --tls-ca: all three or none (throws Failure naming what is missing).
std::optional<TlsCertificates> certificate_options(const std::string& cert, const std::string& key,
                                                   const std::string& ca);

// Parses argv into `vm` for a subcommand that takes only options. A word that is not one
// (`recv /data`, meaning `recv --dir /data`) is a usage error (throws) that suggests `option`,
// never silently dropped.
void parse_options_only(int argc, char** argv,
                        const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm, const std::string& option);

int recv_command(int argc, char** argv);
int send_command(int argc, char** argv);
int bench_command(int argc, char** argv);

}  // namespace ackxfer::cli
