// The receiver's path rule: every escape we can think of is refused; every other name passes.
#include <gtest/gtest.h>

#include "fs/relative_path.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

bool accepted(std::string_view p) {
  return validate_relative_path(p).index() == 0;
}

TEST(RelativePath, AcceptsOrdinaryAndOddNames) {
  for (const std::string& p : std::initializer_list<std::string>{
           "a", "a/b/c", "a b", "-rf", "--help", "...", "..a", "a..", ".hidden", "a/.b/c",
           "tab\there", "new\nline", "back\\slash", "quote\"'", "caf\xc3\xa9", "\xff\xfe", "~", "*",
           "a/b/c/d/e/f"}) {
    EXPECT_TRUE(accepted(p)) << p;
  }
}

// The receiver's own temp namespace: a sender can never name (so never create, replace or
// remove) a partial, a journal or a temp file of the receiver's, at any depth.
TEST(RelativePath, RejectsTheReceiversTempNamespace) {
  for (const std::string& p : std::initializer_list<std::string>{
           ".ackxfer-0123456789abcdef.part", "a/.ackxfer-0123456789abcdef.journal",
           ".ackxfer-x.part/a", ".ackxfer-.part", "d/.ackxfer-anything at all.journal"}) {
    EXPECT_FALSE(accepted(p)) << p;
  }
  for (const std::string& p : std::initializer_list<std::string>{
           ".ackxfer-notes", "ackxfer-x.part", ".ackxfer-x.part.bak", "x.ackxfer-.part"}) {
    EXPECT_TRUE(accepted(p)) << p;
  }
}

TEST(RelativePath, RejectsEscapes) {
  using S = std::string;
  for (const S& p : std::initializer_list<S>{
           "", "/", "/etc/passwd", "..", "../x", "a/..", "a/../b", ".", "./a", "a/.", "a/./b",
           "a//b", "a/", "//a", "a/b/", std::string("a\0b", 3), std::string("\0", 1)}) {
    EXPECT_FALSE(accepted(p)) << "'" << p << "'";
  }
}

TEST(RelativePath, RejectsOverlongComponentsAndPaths) {
  EXPECT_TRUE(accepted(std::string(kMaxComponentBytes, 'x')));
  EXPECT_FALSE(accepted(std::string(kMaxComponentBytes + 1, 'x')));
  std::string deep;
  while (deep.size() + 2 <= kMaxPathBytes)
    deep += deep.empty() ? "d" : "/d";
  EXPECT_TRUE(accepted(deep));
  EXPECT_FALSE(accepted(deep + "/dd"));
}

TEST(RelativePath, SplitsComponents) {
  auto r = validate_relative_path("x/y z/w");
  ASSERT_EQ(r.index(), 0u);
  const auto& c = std::get<RelativePath>(r).components;
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[1], "y z");
}

TEST(RelativePath, ExplainsWhy) {
  auto r = validate_relative_path("a/../b");
  ASSERT_EQ(r.index(), 1u);
  EXPECT_NE(std::get<std::string>(r).find(".."), std::string::npos);
}

}  // namespace
}  // namespace ackxfer
