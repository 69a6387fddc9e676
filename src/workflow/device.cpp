#include "workflow/device.hpp"

#include "core/error.hpp"
#if TERNLAB_HAVE_CUDA
#include "cuda/device_model.hpp"
#endif

namespace tl {

Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::Cpu;
  if (s == "cuda") return Device::Cuda;
  fail("--device must be cpu or cuda, found '{}'", s);
}

const char* device_name(Device d) {
  return d == Device::Cuda ? "cuda" : "cpu";
}

bool cuda_built() {
#if TERNLAB_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

void require_device(Device d) {
  if (d == Device::Cpu) return;
#if TERNLAB_HAVE_CUDA
  std::string why;
  TL_CHECK(cuda::available(&why), "--device cuda: no usable CUDA device: {}", why);
#else
  fail("--device cuda: this ternlab was built without the CUDA backend (configure with -DTERNLAB_CUDA=ON)");
#endif
}

std::string describe_device(Device d) {
  if (d == Device::Cpu) return "cpu";
#if TERNLAB_HAVE_CUDA
  return cuda::device_description(0);
#else
  require_device(d);
  return "cuda";
#endif
}

}  // namespace tl
