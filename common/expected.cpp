#include "common/expected.h"

#include <utility>

namespace taskmaster {

namespace {
constexpr std::pair<ErrorCode, std::string_view> kErrorNames[] = {
    {ErrorCode::BadFrame, "bad_frame"},      {ErrorCode::BadSignature, "bad_signature"}, {ErrorCode::UnknownCommand, "unknown_command"},
    {ErrorCode::TooLarge, "too_large"},      {ErrorCode::BadJson, "bad_json"},           {ErrorCode::BadField, "bad_field"},
    {ErrorCode::NotAllowed, "not_allowed"},  {ErrorCode::UnknownJob, "unknown_job"},     {ErrorCode::UnknownTask, "unknown_task"},
    {ErrorCode::Unavailable, "unavailable"}, {ErrorCode::Unreachable, "unreachable"},    {ErrorCode::AuthFailed, "auth_failed"},
    {ErrorCode::Internal, "internal"},       {ErrorCode::KeyReused, "key_reused"},
};
}  // namespace

std::string_view error_code_name(ErrorCode code) {
  for (const auto& [c, n] : kErrorNames)
    if (c == code) return n;
  return "internal";
}

ErrorCode error_code_from_name(std::string_view name) {
  for (const auto& [c, n] : kErrorNames)
    if (n == name) return c;
  return ErrorCode::Internal;
}

}  // namespace taskmaster
