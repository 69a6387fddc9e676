// NCCL data parallelism: one process per GPU, each holding the whole model; gradients are averaged over the
// ranks after backward. Ranks find each other through a file holding the NCCL unique id, which rank 0
// writes (ternlab's own spawner sets the variables below; any launcher that does the same works).
//   TERNLAB_RANK, TERNLAB_WORLD_SIZE   this process's rank and the number of processes
//   TERNLAB_NCCL_ID                    the path of the unique-id file (rank 0 writes it atomically)
//   TERNLAB_LOCAL_GPU                  the GPU this rank uses (default: the rank)
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
// The rank variables of this process; world = 1 when none are set. Errors: malformed or inconsistent values.
RankInfo rank_from_environment();

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
  // The mean of one host value over ranks (losses for logging); synchronous.
  double all_reduce_mean(double value);
  void barrier();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  RankInfo info_;
};

}  // namespace tl::cuda
