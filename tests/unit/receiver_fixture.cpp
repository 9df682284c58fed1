// ReceiverFixture: a Worker on the FakeLoop.
#include "receiver_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ackxfer::test {

std::pair<int, int> tcp_pair() {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(listen(l, 1), 0);
  EXPECT_EQ(getsockname(l, reinterpret_cast<sockaddr*>(&a), &len), 0);
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  close(l);
  return {s, c};
}

void ReceiverFixture::SetUp() {
  char tmpl[] = "/tmp/ackxfer-unit-recv-XXXXXX";
  ASSERT_TRUE(mkdtemp(tmpl));
  dir_ = tmpl;
  make_receiver();
}

void ReceiverFixture::make_receiver(const std::function<void(ReceiverOptions&)>& adjust) {
  if (ctx_) ctx_->work.stop();
  loop_.forget_all();
  worker_.reset();
  ctx_.reset();
  ReceiverOptions o;
  o.dir = dir_;
  o.log = Logger(
      [this](LogLevel level, std::string_view m) {
        log_.emplace_back(m);
        if (level <= LogLevel::kWarn) warnings_.emplace_back(m);
      },
      LogLevel::kDebug);
  if (adjust) adjust(o);
  ctx_ = std::make_unique<ReceiverContext>(o);
  ctx_->data_port = 36250;
  ctx_->idle_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(o.idle_timeout);
  ctx_->max_sessions = o.max_sessions;
  ctx_->keep_partials_s = o.keep_partials.count();
  ctx_->legacy_enabled = o.legacy;
  ctx_->discard = o.discard;
  if (o.secret) ctx_->use_tls(TlsContext::with_secret(TlsRole::kServer, o.secret));
  ctx_->allow_plain_data = o.allow_unencrypted;
  if (o.fsync) {
    ctx_->destination.track_created_directories(true);
    ctx_->publisher = std::make_unique<DurablePublisher>(ctx_->destination);
  }
  worker_ = std::make_unique<Worker>(*ctx_, loop_, 0);
  worker_->start_housekeeping();
  loop_.run();
}

void ReceiverFixture::TearDown() {
  if (ctx_) {
    ctx_->work.stop();
    if (ctx_->publisher) ctx_->publisher->stop();
  }
  worker_.reset();
  ctx_.reset();
  for (int fd : peers_)
    close(fd);
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

int ReceiverFixture::connected(const std::function<void(UniqueFd)>& give) {
  auto [mine, peer] = tcp_pair();
  peers_.push_back(peer);
  give(UniqueFd(mine));
  loop_.run();
  return mine;
}

int ReceiverFixture::session() {
  return connected([this](UniqueFd fd) { worker_->adopt_control_connection(std::move(fd)); });
}

int ReceiverFixture::data_connection() {
  return connected([this](UniqueFd fd) { worker_->adopt_data_connection(std::move(fd)); });
}

std::string ReceiverFixture::ask(int fd, const std::string& lines) {
  loop_.feed(fd, lines);
  return loop_.take_sent(fd);
}

std::string ReceiverFixture::ask_and_wait(int fd, const std::string& line) {
  loop_.feed(fd, line);
  std::string r;
  EXPECT_TRUE(loop_.run_until([&] {
    r += loop_.take_sent(fd);
    return r.find('\n') != std::string::npos;
  })) << "no reply to "
      << line;
  return r;
}

std::vector<ControlSession*> ReceiverFixture::sessions() const {
  std::vector<ControlSession*> out;
  for (WorkerObject* o : worker_->objects())
    if (auto* s = dynamic_cast<ControlSession*>(o)) out.push_back(s);
  return out;
}

}  // namespace ackxfer::test
