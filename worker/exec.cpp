// The exec handler: runs a command line in its own process group with bounded output capture.
#include <sys/wait.h>

#include "protocol/message.h"
#include "worker/handlers.h"
#include "worker/subprocess.h"

namespace taskmaster {
namespace {

using nlohmann::json;

// The text of a stream, and its raw bytes in base64 too when they are not valid UTF-8 (the text
// has U+FFFD in their place), so that binary output arrives intact.
void add_stream(json& result, const std::string& name, const std::string& data, bool truncated, std::size_t limit) {
  result[name] = protocol::sanitize_text(data, limit);
  if (!subprocess::is_valid_utf8(data)) result[name + "_base64"] = subprocess::base64(data);
  result[name + "_truncated"] = truncated;
}

json run(const json& args, const TaskContext& ctx, const ExecLimits& limits) {
  const auto argv = subprocess::argv_of(args, "exec");
  const auto r = subprocess::run(argv, nullptr, ctx, limits.max_output_bytes, "exec");
  json result = {{"exit_code", WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1},
                 {"signal", WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0}};
  add_stream(result, "stdout", r.out, r.out_truncated, limits.max_output_bytes);
  add_stream(result, "stderr", r.err, r.err_truncated, limits.max_output_bytes);
  return result;
}

}  // namespace

void add_exec_handler(HandlerRegistry& registry, ExecLimits limits) {
  registry.add("exec", [limits](const json& args, const TaskContext& ctx) { return run(args, ctx, limits); });
}

}  // namespace taskmaster
