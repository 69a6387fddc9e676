// JSON parsing for file headers and configs: nlohmann-json keeps the last of two equal keys, which would let
// a malformed file pass silently, so this parser rejects duplicate keys at any depth.
#pragma once
#include <nlohmann/json.hpp>

#include <string_view>

namespace tl {

using ordered_json = nlohmann::ordered_json;

// Parses `text` (must be valid UTF-8 JSON, a single object, no duplicate keys); keys keep their file order.
// `what` names the source in error messages ("config.json", "model.safetensors header").
ordered_json parse_json_object(std::string_view text, std::string_view what);

// "object", "array", "string", "integer", "number", "boolean", "null": for "expected X, found Y" messages.
std::string_view json_kind(const ordered_json& j);

}  // namespace tl
