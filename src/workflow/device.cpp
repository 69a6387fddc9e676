#include "workflow/device.hpp"

#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "core/enum_names.hpp"
#include "core/error.hpp"

namespace tl {

namespace {
constexpr std::array<EnumName<Device>, 2> kDevices{{{Device::Cpu, "cpu"}, {Device::Cuda, "cuda"}}};
}  // namespace

Device parse_device(const std::string& s) {
  return parse_enum(kDevices, s, "device", "--device: ");
}

const char* device_name(Device d) {
  return name_of(kDevices, d).data();  // the table's literals are NUL-terminated
}

namespace {

// The value of `name` in env (or the process environment); nullopt when unset or empty.
std::optional<std::string> lookup(const std::vector<std::string>* env, const char* name) {
  if (!env) {
    const char* v = std::getenv(name);
    if (!v || !*v) return std::nullopt;
    return std::string(v);
  }
  const size_t n = std::strlen(name);
  for (const auto& kv : *env)
    if (kv.size() > n + 1 && kv.compare(0, n, name) == 0 && kv[n] == '=') return kv.substr(n + 1);
  return std::nullopt;
}

std::optional<int> env_int(const std::vector<std::string>* env, const char* name) {
  const auto s = lookup(env, name);
  if (!s) return std::nullopt;
  char* end = nullptr;
  const long v = std::strtol(s->c_str(), &end, 10);
  TL_CHECK(end && *end == '\0' && v >= 0 && v < 4096, "{}='{}' is not a small non-negative integer", name,
           *s);
  return int(v);
}

}  // namespace

ProcessGroup process_group_from(const std::vector<std::string>* env) {
  ProcessGroup g;
  auto world = env_int(env, "TERNLAB_WORLD_SIZE");
  auto rank = env_int(env, "TERNLAB_RANK");
  auto gpu = env_int(env, "TERNLAB_LOCAL_GPU");
  if (!world && !rank) {  // mpirun
    world = env_int(env, "OMPI_COMM_WORLD_SIZE");
    rank = env_int(env, "OMPI_COMM_WORLD_RANK");
    if (!gpu) gpu = env_int(env, "OMPI_COMM_WORLD_LOCAL_RANK");
  }
  g.world = world.value_or(1);
  g.rank = rank.value_or(0);
  TL_CHECK(g.world >= 1, "the world size must be at least 1");
  TL_CHECK(g.rank < g.world, "rank {} is not below the world size {}", g.rank, g.world);
  TL_CHECK(bool(rank) == (g.world > 1) || g.world == 1,
           "a world size of {} needs the rank of this process (TERNLAB_RANK)", g.world);
  g.gpu = gpu.value_or(g.rank);
  g.id_file = lookup(env, "TERNLAB_NCCL_ID").value_or("");
  TL_CHECK(g.world == 1 || !g.id_file.empty(),
           "a world size of {} needs TERNLAB_NCCL_ID: a fresh file path shared by the ranks (ternlab launch "
           "sets it)",
           g.world);
  return g;
}

const ProcessGroup& process_group() {
  static const ProcessGroup g = process_group_from();
  return g;
}

}  // namespace tl
