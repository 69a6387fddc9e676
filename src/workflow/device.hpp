// Where training and evaluation run: the CPU reference, or the CUDA backend (when built with
// -DTERNLAB_CUDA=ON and a GPU is usable).
#pragma once
#include <string>
#include <vector>

namespace tl {

namespace cuda {
class Communicator;  // cuda/nccl.hpp
}

enum class Device { Cpu, Cuda };

// "cpu" | "cuda" (the --device flag).
Device parse_device(const std::string& s);
const char* device_name(Device d);
// cuda_built, require_device, describe_device and process_communicator are defined in workflow/backends.cpp,
// the one file that knows whether this binary has the CUDA backend.
// Whether this binary has the CUDA backend.
bool cuda_built();
// Errors, with what to do about it, when the device cannot be used here: a build without CUDA, no driver,
// no GPU.
void require_device(Device d);
// "cpu", or the GPU's name, compute capability and memory (of this process's GPU: process_group().gpu).
std::string describe_device(Device d);

// Data-parallel training runs one process per GPU. Each finds its place from its environment, set by
// `ternlab launch` or by any launcher that sets the same variables:
//   TERNLAB_RANK, TERNLAB_WORLD_SIZE   this process's rank and the number of processes
//   TERNLAB_LOCAL_GPU                  the GPU this rank uses (default: the rank)
//   TERNLAB_NCCL_ID                    a fresh path where rank 0 leaves the NCCL unique id for the others
// Under mpirun (Open MPI), OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK stand in for the first three.
struct ProcessGroup {
  int rank = 0, world = 1, gpu = 0;
  std::string id_file;
  // Only rank 0 writes files and logs progress; the others compute and stay quiet.
  bool writes_outputs() const { return rank == 0; }
};
// The group described by `env` (NAME=value strings; nullptr: this process's environment). Errors: malformed
// numbers, rank >= world, world > 1 without TERNLAB_NCCL_ID.
ProcessGroup process_group_from(const std::vector<std::string>* env = nullptr);
// This process's group, read once.
const ProcessGroup& process_group();
// This process's NCCL communicator when it is one of several (joined by the first call, kept for the
// process); nullptr for a single process or a build without CUDA.
cuda::Communicator* process_communicator();

}  // namespace tl
