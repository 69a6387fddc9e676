#include "cuda/nccl.hpp"

#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.hpp"
#include "core/file.hpp"
#include "cuda/check.hpp"

namespace tl::cuda {

namespace fs = std::filesystem;

namespace {

int env_int(const char* name, int fallback) {
  const char* s = std::getenv(name);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  TL_CHECK(end && *end == '\0' && v >= 0 && v < 4096, "{}='{}' is not a small non-negative integer", name, s);
  return int(v);
}

}  // namespace

RankInfo rank_from_environment() {
  RankInfo r;
  r.world = env_int("TERNLAB_WORLD_SIZE", 1);
  r.rank = env_int("TERNLAB_RANK", 0);
  TL_CHECK(r.world >= 1 && r.rank < r.world, "TERNLAB_RANK {} is not below TERNLAB_WORLD_SIZE {}", r.rank,
           r.world);
  r.gpu = env_int("TERNLAB_LOCAL_GPU", r.rank);
  if (const char* f = std::getenv("TERNLAB_NCCL_ID")) r.id_file = f;
  TL_CHECK(r.world == 1 || !r.id_file.empty(), "TERNLAB_WORLD_SIZE is {} but TERNLAB_NCCL_ID is not set",
           r.world);
  return r;
}

struct Communicator::Impl {
  ncclComm_t comm = nullptr;
  double* scalar_d = nullptr;  // device scratch of all_reduce_mean(double)
};

Communicator::Communicator(const RankInfo& info) : impl_(std::make_unique<Impl>()), info_(info) {
  TL_CUDA_CHECK(cudaSetDevice(info.gpu));
  ncclUniqueId id{};
  if (info.rank == 0) {
    TL_NCCL_CHECK(ncclGetUniqueId(&id));
    write_file_atomic(info.id_file, std::string(reinterpret_cast<const char*>(&id), sizeof id));
  } else {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (true) {
      std::error_code ec;
      if (fs::exists(info.id_file, ec) && fs::file_size(info.id_file, ec) == sizeof id) break;
      TL_CHECK(std::chrono::steady_clock::now() < deadline, "rank {}: no NCCL id in {} after 120 s",
               info.rank, info.id_file);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::string bytes = read_file(info.id_file);
    std::memcpy(&id, bytes.data(), sizeof id);
  }
  TL_NCCL_CHECK(ncclCommInitRank(&impl_->comm, info.world, id, info.rank));
  TL_CUDA_CHECK(cudaMalloc(&impl_->scalar_d, sizeof(double)));
}

Communicator::~Communicator() {
  if (impl_->scalar_d) cudaFree(impl_->scalar_d);
  if (impl_->comm) ncclCommDestroy(impl_->comm);
}

void Communicator::all_reduce_mean(float* buf, size_t n, cudaStream_t stream) {
  TL_NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, impl_->comm, stream));
}

double Communicator::all_reduce_mean(double value) {
  TL_CUDA_CHECK(cudaMemcpy(impl_->scalar_d, &value, sizeof value, cudaMemcpyHostToDevice));
  TL_NCCL_CHECK(
      ncclAllReduce(impl_->scalar_d, impl_->scalar_d, 1, ncclFloat64, ncclAvg, impl_->comm, nullptr));
  TL_CUDA_CHECK(cudaMemcpy(&value, impl_->scalar_d, sizeof value, cudaMemcpyDeviceToHost));
  return value;
}

void Communicator::barrier() {
  all_reduce_mean(0.0);
}

}  // namespace tl::cuda
