// Where training and evaluation run: the CPU reference, or the CUDA backend (when built with
// -DTERNLAB_CUDA=ON and a GPU is usable).
#pragma once
#include <string>

namespace tl {

enum class Device { Cpu, Cuda };

// "cpu" | "cuda" (the --device flag).
Device parse_device(const std::string& s);
const char* device_name(Device d);
// Whether this binary has the CUDA backend.
bool cuda_built();
// Errors, with what to do about it, when the device cannot be used here: a build without CUDA, no driver,
// no GPU.
void require_device(Device d);
// "cpu", or the GPU's name, compute capability and memory.
std::string describe_device(Device d);

}  // namespace tl
