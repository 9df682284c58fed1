// A minimal JSON writer for --json output: objects, arrays, strings, numbers. Strings that are
// not valid UTF-8 (Linux file names may be anything) keep their valid parts and show each
// invalid byte as the text \xHH.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ackxfer::cli {

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array(std::string_view key = {});
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(std::uint64_t n);
  JsonWriter& value(int n);
  JsonWriter& value(unsigned n) { return value(static_cast<std::uint64_t>(n)); }
  JsonWriter& value(double d);
  JsonWriter& value(bool b);
  template <class T>
  JsonWriter& field(std::string_view k, const T& v) {
    key(k);
    return value(v);
  }
  const std::string& str() const { return out_; }

  static std::string quote(std::string_view s);

 private:
  void comma();
  std::string out_;
  bool need_comma_ = false;
};

}  // namespace ackxfer::cli
