// NCCL data parallelism: one process per GPU, each holding the whole model; gradients are averaged over the
// ranks during backward (cuda/device_trainer.cpp). Ranks find each other through a file holding the NCCL
// unique id, which rank 0 writes atomically and removes once every rank has joined. Where the rank, world
// and file come from: workflow/device.hpp (ProcessGroup).
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include <cuda_runtime.h>

namespace tl::cuda {

struct RankInfo {
  int rank = 0, world = 1, gpu = 0;
  std::string id_file;
};

class Communicator {
 public:
  // Joins the group (blocks until every rank has joined; rank 0 creates the id). Errors: NCCL's, or no id
  // file within 120 s.
  explicit Communicator(const RankInfo& info);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return info_.rank; }
  int world() const { return info_.world; }
  // buf (n floats, device) = mean over ranks, on `stream`.
  void all_reduce_mean(float* buf, size_t n, cudaStream_t stream);
  // The mean of one host value over ranks (losses for logging), queued on `stream` after the work there;
  // waits for it.
  double all_reduce_mean(double value, cudaStream_t stream = nullptr);
  // Every rank's buf (n floats, device) = root's; recv may equal send on the root.
  void broadcast(const float* send, float* recv, size_t n, int root, cudaStream_t stream);
  // Brackets several calls into one NCCL group (fused launch).
  void group_start();
  void group_end();
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  RankInfo info_;
};

}  // namespace tl::cuda
