// Reading numeric metadata whatever integer or float type a writer chose (llama.cpp's converters write u32
// and f32; other tools differ). Errors name the file and key.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

#include "formats/gguf.hpp"

namespace tl {

// An integer key of any GGUF integer type, checked to fit int64; nullopt if absent; tl::Error for another
// type (bool, float, string, array) or an out-of-range u64.
std::optional<int64_t> gguf_int(const GgufFile& f, std::string_view key);
// An f32 or f64 key; nullopt if absent; tl::Error for another type or a non-finite value.
std::optional<double> gguf_float(const GgufFile& f, std::string_view key);
// A string key; nullopt if absent; tl::Error for another type.
std::optional<std::string> gguf_string(const GgufFile& f, std::string_view key);

}  // namespace tl
