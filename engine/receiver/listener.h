// Accepts connections on one listening socket with multishot accept and hands each new fd to
// the worker as a control session or a data stream.
#pragma once

#include "receiver/worker.h"

namespace ackxfer {

class Listener final : public WorkerObject {
 public:
  enum class Kind { kControl, kData };
  Listener(Worker& worker, UniqueFd fd, Kind kind);
  void start() override;
  void shutdown() override;

 private:
  enum Op : unsigned { kAccept = 1, kRetryTimer = 2 };
  void on_complete(unsigned op, const Completion& c) override;
  void on_drained() override;
  void arm();

  UniqueFd fd_;
  Kind kind_;
};

}  // namespace ackxfer
