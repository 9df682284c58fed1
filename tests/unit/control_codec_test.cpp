// The control-line grammar (docs/PROTOCOL.md, "Control lines"), rule by rule.
#include <gtest/gtest.h>

#include "protocol/control_codec.h"
#include "protocol/limits.h"

namespace ackxfer {
namespace {

ClientMessage parse_ok(std::string_view line) {
  auto p = parse_client_line(line);
  EXPECT_TRUE(p.ok()) << line << ": " << (p.ok() ? "" : p.error().message);
  return p.ok() ? p.value() : ClientMessage{};
}

ErrorCode parse_error(std::string_view line) {
  auto p = parse_client_line(line);
  EXPECT_FALSE(p.ok()) << "accepted: " << line;
  return p.ok() ? ErrorCode::kBadLine : p.error().code;
}

std::string strip_nl(std::string s) {
  EXPECT_EQ(s.back(), '\n');
  s.pop_back();
  return s;
}

TEST(ControlCodec, ClientMessagesRoundTrip) {
  SendRequest send{7,
                   "dir/a b\tc\nd\\e\x01\xff.bin",
                   123456789012,
                   0644,
                   Mtime{1732531200, 5},
                   8 << 20,
                   SkipPolicy::kNever,
                   {}};
  SendRequest quick = send;
  quick.skip = SkipPolicy::kSizeMtime;
  SendRequest by_digest = send;
  by_digest.skip = SkipPolicy::kDigest;
  by_digest.digest = digest_of("y", 1);
  MkdirRequest mkdir{8, "dir/sub", 0755, Mtime{-5, 999999999}};
  DoneRequest done{9, digest_of("x", 1)};
  HelloRequest hello_with_features{2, Features().add(Feature::kLink)};
  HelloRequest hello_plain_data{2, Features::all(), true};
  LinkRequest relative_link{10, "dir/to sibling", "../other dir/f\x01\xff", Mtime{1732531200, 7}};
  LinkRequest absolute_link{11, "dir/abs", "/etc/passwd", Mtime{-5, 999999999}};
  LinkRequest escaped_link{12, "l", "a\\b=c", Mtime{0, 0}};  // '\' and '=' in the target
  std::vector<ClientMessage> msgs = {HelloRequest{2, std::nullopt},
                                     hello_with_features,
                                     hello_plain_data,
                                     HelloRequest{2, Features()},
                                     ProgressNote{7, 1 << 20, 1 << 30},
                                     send,
                                     quick,
                                     by_digest,
                                     mkdir,
                                     done,
                                     CancelRequest{3},
                                     ByeRequest{},
                                     relative_link,
                                     absolute_link,
                                     escaped_link};
  for (const auto& m : msgs) {
    std::string line = strip_nl(format_line(m));
    EXPECT_EQ(line.find('\n'), std::string::npos);
    EXPECT_EQ(parse_ok(line), m) << line;
  }
}

TEST(ControlCodec, ServerMessagesRoundTrip) {
  std::vector<ServerMessage> msgs = {
      HelloReply{2, 36250, 256, std::nullopt, false},
      HelloReply{2, 36250, 64, Features::all(), true},
      HelloReply{2, 36250, 64, Features(), false, true},
      ProgressNote{3, 0, 0},
      CreditReply{96},
      ReadyReply{5, Token::random(), {}},
      ReadyReply{6, Token::random(), {{0, 3}, {7, 7}, {9, 12}}},
      OkReply{5, false},
      OkReply{5, true},
      ErrReply{5, ErrorCode::kBadPath, "'../x': path has a \"..\" component"},
      ErrReply{std::nullopt, ErrorCode::kShutdown, "bye"},
      ByeReply{10, 1 << 20}};
  for (const auto& m : msgs) {
    std::string line = strip_nl(format_line(m));
    auto p = parse_server_line(line);
    ASSERT_TRUE(p.ok()) << line;
    EXPECT_EQ(p.value(), m) << line;
  }
}

TEST(ControlCodec, SendLineIsHumanReadable) {
  SendRequest s{1, "my file.txt", 10, 0644, Mtime{100, 0}, 65536, SkipPolicy::kNever, {}};
  EXPECT_EQ(format_line(s),
            "SEND 1 my\\x20file.txt size=10 mode=0644 mtime=100.000000000 chunk=65536\n");
}

TEST(ControlCodec, LinkLineIsHumanReadableAndKeepsTheTargetVerbatim) {
  LinkRequest l{3, "tree/up link", "../../etc/x y", Mtime{100, 5}};
  EXPECT_EQ(format_line(l),
            "LINK 3 tree/up\\x20link target=../../etc/x\\x20y mtime=100.000000005\n");
  // The target is data: ".." and absolute targets parse as they are, never normalised.
  auto m = std::get<LinkRequest>(parse_ok("LINK 4 a target=/x/../y//z/. mtime=1.5"));
  EXPECT_EQ(m.target, "/x/../y//z/.");
  EXPECT_EQ(m.mtime, (Mtime{1, 500000000}));
  EXPECT_EQ(std::get<LinkRequest>(parse_ok("LINK 5 a target=\\x2e\\x2e mtime=1.0")).target, "..");
}

TEST(ControlCodec, RejectsMalformedLinkLines) {
  EXPECT_EQ(parse_error("LINK"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("LINK 1"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("LINK x a target=b mtime=1.0"), ErrorCode::kBadNumber);
  EXPECT_EQ(parse_error("LINK 1 a mtime=1.0"), ErrorCode::kBadField);                 // no target
  EXPECT_EQ(parse_error("LINK 1 a target= mtime=1.0"), ErrorCode::kBadField);         // empty
  EXPECT_EQ(parse_error("LINK 1 a target=b\\x00c mtime=1.0"), ErrorCode::kBadField);  // NUL
  EXPECT_EQ(parse_error("LINK 1 a target=b\\xzz mtime=1.0"), ErrorCode::kBadField);   // escape
  EXPECT_EQ(parse_error("LINK 1 a target=b target=c mtime=1.0"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("LINK 1 a target=b"), ErrorCode::kBadField);  // no mtime
  EXPECT_EQ(parse_error("LINK 1 a target=b mtime=1"), ErrorCode::kBadNumber);
  EXPECT_EQ(parse_error("LINK 1 a target=b mtime=1.0 junk"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("LINK 1 a\\xzz target=b mtime=1.0"), ErrorCode::kBadPath);
  // Errors name the link, so a sender can tell which one failed.
  auto p = parse_client_line("LINK 77 a target= mtime=1.0");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().id, 77u);
}

TEST(ControlCodec, LinkTargetLimits) {
  std::string longest(kMaxLinkTargetBytes, 't');
  auto ok = parse_ok("LINK 1 a target=" + longest + " mtime=1.0");
  EXPECT_EQ(std::get<LinkRequest>(ok).target, longest);
  EXPECT_EQ(parse_error("LINK 1 a target=" + longest + "t mtime=1.0"), ErrorCode::kBadField);
  // Path and target escaped share kMaxLinkEscapedBytes: one escaped byte (4 on the wire) too many.
  std::string path(kMaxPathBytes, 'p');
  std::string escaped_target;
  for (std::size_t i = 0; i < (kMaxLinkEscapedBytes - kMaxPathBytes) / 4 + 1; ++i)
    escaped_target += "\\xc3";
  EXPECT_EQ(parse_error("LINK 1 " + path + " target=" + escaped_target + " mtime=1.0"),
            ErrorCode::kBadField);
  escaped_target.resize(escaped_target.size() - 4);
  auto fits = parse_ok("LINK 1 " + path + " target=" + escaped_target + " mtime=1.0");
  // The longest LINK that parses formats back to a line within the line limit.
  EXPECT_LE(format_line(fits).size() - 1, kMaxLineBytes);
  EXPECT_TRUE(link_target_problem(path, std::string(kMaxPathBytes, 't')) == std::nullopt);
  EXPECT_TRUE(link_target_problem("a", ""));
  EXPECT_TRUE(link_target_problem("a", std::string("x\0y", 3)));
  EXPECT_EQ(escaped_size("a b\\\xff"), 1u + 4 + 1 + 4 + 4);
}

TEST(ControlCodec, EveryByteValueRoundTripsThroughEscaping) {
  std::string all;
  for (int c = 0; c < 256; ++c)
    all.push_back(static_cast<char>(c));
  std::string esc = escape_bytes(all);
  for (unsigned char c : esc)
    EXPECT_TRUE(c >= 0x21 && c <= 0x7e);
  auto back = unescape_bytes(esc);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, all);
}

TEST(ControlCodec, RejectsBadEscapes) {
  EXPECT_FALSE(unescape_bytes("a\\"));
  EXPECT_FALSE(unescape_bytes("a\\x"));
  EXPECT_FALSE(unescape_bytes("a\\x4"));
  EXPECT_FALSE(unescape_bytes("a\\xzz"));
  EXPECT_FALSE(unescape_bytes("a\\n"));
  EXPECT_FALSE(unescape_bytes("a\\x+1"));
  EXPECT_FALSE(unescape_bytes("a b"));
  EXPECT_EQ(*unescape_bytes("a\\x2Fb"), "a/b");  // decodes to '/': the path rule judges it
  EXPECT_EQ(*unescape_bytes("\\x00"), std::string(1, '\0'));
}

TEST(ControlCodec, RejectsUnknownVerb) {
  EXPECT_EQ(parse_error("PUT 1 x"), ErrorCode::kUnknownVerb);
  EXPECT_EQ(parse_error("send 1 x size=1 mode=0644 mtime=1.0 chunk=65536"),
            ErrorCode::kUnknownVerb);
}

TEST(ControlCodec, RejectsMalformedLines) {
  EXPECT_EQ(parse_error(""), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error(" BYE"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("BYE "), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("DONE  1 xxh3=00"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("BYE\t"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error(std::string("SEND 1 a\0b size=1", 17)), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("HELLO"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("HELLO rsync 1"), ErrorCode::kBadLine);
  EXPECT_EQ(parse_error("SEND 1"), ErrorCode::kBadLine);
}

TEST(ControlCodec, TruncatedSendIsMissingFields) {
  EXPECT_EQ(parse_error("SEND 1 a"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("SEND 1 a size=1"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("SEND 1 a size=1 mode=0644"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("SEND 1 a size=1 mode=0644 mtime=1.0"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 size=2"),
            ErrorCode::kBadField);
  EXPECT_EQ(parse_error("SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 junk"),
            ErrorCode::kBadField);
}

TEST(ControlCodec, DataInClearIsAskedForAndConfirmedByNameOnly) {
  EXPECT_FALSE(std::get<HelloRequest>(parse_ok("HELLO ackxfer 2")).plain_data);
  EXPECT_TRUE(std::get<HelloRequest>(parse_ok("HELLO ackxfer 2 data=plain")).plain_data);
  // Anything else is refused, never read as "encrypted" or "plain" by guesswork.
  EXPECT_EQ(parse_error("HELLO ackxfer 2 data=tls"), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("HELLO ackxfer 2 data="), ErrorCode::kBadField);
  EXPECT_EQ(parse_error("HELLO ackxfer 2 data=plain data=plain"), ErrorCode::kBadField);
  auto r = parse_server_line("HELLO ackxfer 2 data-port=1 max-open=1 data=plain");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(std::get<HelloReply>(r.value()).plain_data);
  EXPECT_FALSE(parse_server_line("HELLO ackxfer 2 data-port=1 max-open=1 data=none").ok());
  // The HMAC exchange of protocol 1 is gone: AUTH is not a verb any more.
  EXPECT_EQ(parse_error("AUTH proof=" + std::string(64, 'a')), ErrorCode::kUnknownVerb);
  EXPECT_FALSE(parse_server_line("AUTH nonce=" + std::string(32, 'a')).ok());
}

TEST(ControlCodec, UnknownKeysAreIgnoredForForwardCompatibility) {
  auto m = parse_ok("SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 future=yes");
  EXPECT_EQ(std::get<SendRequest>(m).size, 1u);
}

TEST(ControlCodec, RejectsBadNumbers) {
  const char* bad[] = {
      "SEND x a size=1 mode=0644 mtime=1.0 chunk=65536",
      "SEND -1 a size=1 mode=0644 mtime=1.0 chunk=65536",
      "SEND 1 a size=-1 mode=0644 mtime=1.0 chunk=65536",
      "SEND 1 a size=0x10 mode=0644 mtime=1.0 chunk=65536",
      "SEND 1 a size=99999999999999999999999 mode=0644 mtime=1.0 chunk=65536",
      "SEND 1 a size=18446744073709551616 mode=0644 mtime=1.0 chunk=65536",
      "SEND 1 a size=1125899906842625 mode=0644 mtime=1.0 chunk=65536",  // > 1 PiB
      "SEND 1 a size=1 mode=0648 mtime=1.0 chunk=65536",                 // not octal
      "SEND 1 a size=1 mode=17777 mtime=1.0 chunk=65536",
      "SEND 1 a size=1 mode=0644 mtime=1 chunk=65536",
      "SEND 1 a size=1 mode=0644 mtime=1.0000000000 chunk=65536",
      "SEND 1 a size=1 mode=0644 mtime=x.5 chunk=65536",
      "SEND 1 a size=1 mode=0644 mtime=1.0 chunk=1024",                  // below minimum
      "SEND 1 a size=1 mode=0644 mtime=1.0 chunk=68719476737",           // above maximum
      "SEND 1 a size=1125899906842624 mode=0644 mtime=1.0 chunk=65536",  // too many chunks
      "SEND 9007199254740992 a size=1 mode=0644 mtime=1.0 chunk=65536",  // id > 2^53-1
      "SEND 1 a size= mode=0644 mtime=1.0 chunk=65536",
  };
  for (const char* line : bad) {
    auto p = parse_client_line(line);
    ASSERT_FALSE(p.ok()) << line;
    EXPECT_TRUE(p.error().code == ErrorCode::kBadNumber || p.error().code == ErrorCode::kBadField)
        << line << " -> " << wire_name(p.error().code);
  }
}

TEST(ControlCodec, ErrorsCarryTheIdWhenReadable) {
  auto p = parse_client_line("SEND 42 a size=zz mode=0644 mtime=1.0 chunk=65536");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().id, 42u);
}

TEST(ControlCodec, RejectsOverlongLines) {
  std::string line = "SEND 1 " + std::string(kMaxLineBytes, 'a');
  EXPECT_EQ(parse_error(line), ErrorCode::kLineTooLong);
}

TEST(ControlCodec, RejectsPathsOverTheLimitAfterDecoding) {
  std::string ok(kMaxPathBytes, 'a');
  parse_ok("SEND 1 " + ok + " size=1 mode=0644 mtime=1.0 chunk=65536");
  std::string too_long(kMaxPathBytes + 1, 'a');
  EXPECT_EQ(parse_error("SEND 1 " + too_long + " size=1 mode=0644 mtime=1.0 chunk=65536"),
            ErrorCode::kBadPath);
}

TEST(ControlCodec, MtimeParsing) {
  EXPECT_EQ(*parse_mtime("0.5"), (Mtime{0, 500000000}));
  EXPECT_EQ(*parse_mtime("-1.5"), (Mtime{-2, 500000000}));
  EXPECT_EQ(*parse_mtime("-0.000000000"), (Mtime{0, 0}));
  EXPECT_EQ(format_mtime(Mtime{-2, 500000000}), "-1.500000000");
  EXPECT_EQ(format_mtime(Mtime{-1, 500000000}), "-0.500000000");
  EXPECT_EQ(format_mtime(Mtime{-3, 0}), "-3.000000000");
  for (Mtime m : {Mtime{-5, 999999999}, Mtime{-1, 1}, Mtime{0, 0}, Mtime{7, 9}, Mtime{-7, 0}})
    EXPECT_EQ(*parse_mtime(format_mtime(m)), m) << format_mtime(m);
  EXPECT_FALSE(parse_mtime(".5"));
  EXPECT_FALSE(parse_mtime("5."));
  EXPECT_FALSE(parse_mtime("--1.0"));
  EXPECT_FALSE(parse_mtime("1.0.0"));
}

TEST(ControlCodec, ToleratesCarriageReturnForNetcatUsers) {
  EXPECT_TRUE(std::holds_alternative<ByeRequest>(parse_ok("BYE\r")));
}

TEST(ControlCodec, ServerErrWithUnknownCodeIsStillAnError) {
  auto p = parse_server_line("ERR 3 frobnicated something odd");
  ASSERT_TRUE(p.ok());
  const auto& e = std::get<ErrReply>(p.value());
  EXPECT_EQ(e.id, 3u);
  EXPECT_NE(e.message.find("frobnicated"), std::string::npos);
}

TEST(ControlCodec, ErrorCodeTableIsConsistent) {
  for (int i = 0; i <= static_cast<int>(ErrorCode::kShutdown); ++i) {
    auto c = static_cast<ErrorCode>(i);
    EXPECT_EQ(error_code_from_wire(wire_name(c)), c);
    EXPECT_FALSE(description(c).empty());
  }
  EXPECT_EQ(error_code_from_errno(ENOSPC), ErrorCode::kNoSpace);
  EXPECT_TRUE(is_retryable(ErrorCode::kMismatch));
  EXPECT_FALSE(is_retryable(ErrorCode::kBadPath));
}

TEST(ControlCodec, SkipFieldsAreChecked) {
  auto ok = parse_client_line("SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 skip=size-mtime");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(std::get<SendRequest>(ok.value()).skip, SkipPolicy::kSizeMtime);
  // No skip field: an older sender, which expects the file to be replaced.
  auto old = parse_client_line("SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536");
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(std::get<SendRequest>(old.value()).skip, SkipPolicy::kNever);
  for (const char* bad : {"SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 skip=maybe",
                          "SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 skip=xxh3",
                          "SEND 1 a size=1 mode=0644 mtime=1.0 chunk=65536 skip=xxh3 xxh3=12"}) {
    auto p = parse_client_line(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.error().code, ErrorCode::kBadField) << bad;
    EXPECT_EQ(p.error().id, 1u);
  }
}

TEST(ControlCodec, RangesParseStrictly) {
  auto r = parse_ranges("0-3,7,9-12", 13);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, (std::vector<ChunkRange>{{0, 3}, {7, 7}, {9, 12}}));
  EXPECT_EQ(format_ranges(*r, 100), "0-3,7,9-12");
  for (const char* bad : {"", ",", "1,", ",1", "3-1", "1,1", "0-3,2", "13", "0-13", "a", "1--2",
                          "-1", "1-", "99999999999", "1 2"})
    EXPECT_FALSE(parse_ranges(bad, 13)) << bad;
  // Formatting stops before the limit instead of cutting a range in half.
  std::vector<ChunkRange> many;
  for (std::uint32_t i = 0; i < 1000; i += 2)
    many.push_back({i, i});
  std::string text = format_ranges(many, 64);
  EXPECT_LE(text.size(), 64u);
  auto back = parse_ranges(text, 1000);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, std::vector<ChunkRange>(many.begin(), many.begin() + back->size()));
}

TEST(ControlCodec, ReadyWithBadHaveIsRejected) {
  auto p = parse_server_line("READY 4 token=00112233445566778899aabbccddeeff have=5-2");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.error().code, ErrorCode::kBadField);
  auto skipped = parse_server_line("OK 4 skipped=2");
  EXPECT_FALSE(skipped.ok());
}

}  // namespace
}  // namespace ackxfer
