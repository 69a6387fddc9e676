#include "cuda/nccl.hpp"

#include <nccl.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.hpp"
#include "core/file.hpp"
#include "cuda/check.hpp"

namespace tl::cuda {

namespace fs = std::filesystem;

struct Communicator::Impl {
  ncclComm_t comm = nullptr;
  double* scalar_d = nullptr;  // device scratch of all_reduce_mean(double)
};

Communicator::Communicator(const RankInfo& info) : impl_(std::make_unique<Impl>()), info_(info) {
  TL_CUDA_CHECK(cudaSetDevice(info.gpu));
  ncclUniqueId id{};
  if (info.rank == 0) {
    TL_NCCL_CHECK(ncclGetUniqueId(&id));
    if (info.world > 1)
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
  TL_CHECK(info.rank >= 0 && info.rank < info.world, "nccl: rank {} of {}", info.rank, info.world);
  TL_NCCL_CHECK(ncclCommInitRank(&impl_->comm, info.world, id, info.rank));  // returns when all have joined
  if (info.rank == 0 && info.world > 1) {  // no later run can pick up a stale id
    std::error_code ec;
    fs::remove(info.id_file, ec);
  }
  TL_CUDA_CHECK(cudaMalloc(&impl_->scalar_d, sizeof(double)));
}

Communicator::~Communicator() {
  if (impl_->scalar_d) cudaFree(impl_->scalar_d);
  if (impl_->comm) ncclCommDestroy(impl_->comm);
}

void Communicator::all_reduce_mean(float* buf, size_t n, cudaStream_t stream) {
  TL_NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, impl_->comm, stream));
}

double Communicator::all_reduce_mean(double value, cudaStream_t stream) {
  TL_CUDA_CHECK(cudaMemcpyAsync(impl_->scalar_d, &value, sizeof value, cudaMemcpyHostToDevice, stream));
  TL_NCCL_CHECK(
      ncclAllReduce(impl_->scalar_d, impl_->scalar_d, 1, ncclFloat64, ncclAvg, impl_->comm, stream));
  TL_CUDA_CHECK(cudaMemcpyAsync(&value, impl_->scalar_d, sizeof value, cudaMemcpyDeviceToHost, stream));
  TL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return value;
}

void Communicator::broadcast(const float* send, float* recv, size_t n, int root, cudaStream_t stream) {
  TL_NCCL_CHECK(ncclBroadcast(send, recv, n, ncclFloat32, root, impl_->comm, stream));
}

void Communicator::group_start() {
  TL_NCCL_CHECK(ncclGroupStart());
}

void Communicator::group_end() {
  TL_NCCL_CHECK(ncclGroupEnd());
}

void Communicator::barrier() {
  all_reduce_mean(0.0);
}

}  // namespace tl::cuda
