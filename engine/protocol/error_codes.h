// Error codes carried by `ERR <id> <code> <message>` replies: one list, each with the words
// sent on the wire, whether a sender may retry, and what it means.
#pragma once

#include <optional>
#include <string_view>

namespace ackxfer {

// X(enumerator, wire name, retryable, description)
#define ACKXFER_ERROR_CODES(X)                                                          \
  X(kBadLine, "bad-line", false, "the line breaks the protocol's grammar or order")     \
  X(kLineTooLong, "line-too-long", false, "a control line exceeded the maximum length") \
  X(kUnknownVerb, "unknown-verb", false, "the verb is not one this receiver knows")     \
  X(kBadNumber, "bad-number", false, "a number is malformed or out of range")           \
  X(kBadField, "bad-field", false, "a field is missing, repeated or malformed")         \
  X(kBadPath, "bad-path", false, "the path is not a safe relative path")                \
  X(kHelloExpected, "hello-expected", false, "the first line must be HELLO")            \
  X(kVersion, "version", false, "the peer does not speak this protocol version")        \
  X(kDuplicateId, "duplicate-id", false, "the id is already in use in this session")    \
  X(kUnknownId, "unknown-id", false, "no open file has this id")                        \
  X(kTooManyOpen, "too-many-open", true, "too many files open in this session")         \
  X(kBusy, "busy", true, "the receiver is out of a resource; try again")                \
  X(kNoSpace, "no-space", false, "no space left on the receiver's device")              \
  X(kPermission, "permission-denied", false, "the receiver may not write there")        \
  X(kNotDirectory, "not-a-directory", false, "a parent of the path is not a directory") \
  X(kIsDirectory, "is-a-directory", false, "the path names an existing directory")      \
  X(kIo, "io-error", true, "an I/O error on the receiver")                              \
  X(kIncomplete, "incomplete", true, "DONE arrived before every chunk was verified")    \
  X(kMismatch, "mismatch", true, "the file digest does not match the bytes received")   \
  X(kCancelled, "cancelled", false, "the sender cancelled the file")                    \
  X(kShutdown, "shutdown", false, "the receiver is shutting down")                      \
  X(kTimeout, "timeout", true, "the peer was idle for longer than the receiver allows") \
  X(kAuthRequired, "auth-required", false,                                              \
    "this receiver accepts only encrypted sessions (a secret or certificates)")         \
  X(kNoEncryption, "no-encryption", false,                                              \
    "the receiver cannot encrypt: it has no secret and no certificates")                \
  X(kPlainRefused, "plain-data-refused", false,                                         \
    "the receiver does not take data in clear (recv --allow-unencrypted)")

enum class ErrorCode {
#define ACKXFER_ENUM(e, wire, retry, desc) e,
  ACKXFER_ERROR_CODES(ACKXFER_ENUM)
#undef ACKXFER_ENUM
};

std::string_view wire_name(ErrorCode c);
std::string_view description(ErrorCode c);
bool is_retryable(ErrorCode c);
std::optional<ErrorCode> error_code_from_wire(std::string_view name);
// Maps an errno from a receiver-side file operation to the code sent to the sender.
ErrorCode error_code_from_errno(int err);

}  // namespace ackxfer
