// Lookup tables generated from ACKXFER_ERROR_CODES.
#include "protocol/error_codes.h"

#include <cerrno>

namespace ackxfer {
namespace {

struct Row {
  ErrorCode code;
  std::string_view wire;
  bool retryable;
  std::string_view description;
};

constexpr Row kRows[] = {
#define ACKXFER_ROW(e, wire, retry, desc) {ErrorCode::e, wire, retry, desc},
    ACKXFER_ERROR_CODES(ACKXFER_ROW)
#undef ACKXFER_ROW
};

const Row& row(ErrorCode c) {
  return kRows[static_cast<int>(c)];
}

}  // namespace

std::string_view wire_name(ErrorCode c) {
  return row(c).wire;
}
std::string_view description(ErrorCode c) {
  return row(c).description;
}
bool is_retryable(ErrorCode c) {
  return row(c).retryable;
}

std::optional<ErrorCode> error_code_from_wire(std::string_view name) {
  for (const Row& r : kRows)
    if (r.wire == name) return r.code;
  return std::nullopt;
}

ErrorCode error_code_from_errno(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return ErrorCode::kNoSpace;
    case EACCES:
    case EPERM:
    case EROFS:
      return ErrorCode::kPermission;
    case ENOTDIR:
    case ELOOP:  // a symlink where a directory was expected (we never follow one out)
      return ErrorCode::kNotDirectory;
    case EISDIR:
      return ErrorCode::kIsDirectory;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      return ErrorCode::kBusy;
    case EXDEV:
    case ENAMETOOLONG:
      return ErrorCode::kBadPath;
    default:
      return ErrorCode::kIo;
  }
}

}  // namespace ackxfer
