// A receiver worker on the loop test double: a ReceiverContext on a temp --dir, a Worker on a
// FakeLoop, and connections whose fds are real loopback sockets (the session reads its peer's
// address off them) while every byte goes through the fake. Used by the ControlSession and
// DataStream tests.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fake_loop.h"
#include "receiver/control_session.h"
#include "receiver/data_stream.h"
#include "receiver/receiver_context.h"
#include "receiver/worker.h"

namespace ackxfer::test {

namespace fs = std::filesystem;

// A connected TCP pair on 127.0.0.1: {the receiver's end, the peer's end}.
std::pair<int, int> tcp_pair();

class ReceiverFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  // Builds the receiver (options may be changed before); called by SetUp with defaults.
  void make_receiver(const std::function<void(ReceiverOptions&)>& adjust = {});
  // A new control session (returns its fd on the fake) / data connection.
  int session();
  int data_connection();
  // A connection whose near end `give` hands to the worker (adopt_* or take_*), run until
  // nothing moves; returns the near end's fd (the far end is closed at the end).
  int connected(const std::function<void(UniqueFd)>& give);
  // Feeds a line and returns every reply line sent since the last call.
  std::string ask(int fd, const std::string& lines);
  // The same, running the loop until a whole reply line has come: for a line whose reply waits
  // for work on the work queue (a skip=xxh3 check, a kept partial read back).
  std::string ask_and_wait(int fd, const std::string& line);
  std::vector<ControlSession*> sessions() const;

  fs::path dir_;
  FakeLoop loop_;
  std::unique_ptr<ReceiverContext> ctx_;
  std::unique_ptr<Worker> worker_;
  std::vector<int> peers_;  // the far ends, closed at the end
  std::vector<std::string> log_;
  std::vector<std::string> warnings_;  // of log_, those at warning level or above
};

}  // namespace ackxfer::test
