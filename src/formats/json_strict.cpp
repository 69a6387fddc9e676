#include "formats/json_strict.hpp"

#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace tl {

ordered_json parse_json_object(std::string_view text, std::string_view what) {
  // One key set per open object; the parser callback sees every key before its value.
  std::vector<std::set<std::string>> open;
  std::string duplicate;
  auto cb = [&](int /*depth*/, ordered_json::parse_event_t ev, ordered_json& parsed) {
    switch (ev) {
      case ordered_json::parse_event_t::object_start:
        open.emplace_back();
        break;
      case ordered_json::parse_event_t::object_end:
        if (!open.empty()) open.pop_back();
        break;
      case ordered_json::parse_event_t::key:
        if (!open.empty() && !open.back().insert(parsed.get<std::string>()).second && duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default:
        break;
    }
    return true;
  };
  ordered_json j;
  try {
    j = ordered_json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true,
                            /*ignore_comments=*/false);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann's message carries the byte position and rejects ill-formed UTF-8 in strings.
    fail("{}: invalid JSON (or not UTF-8): {}", what, e.what());
  }
  TL_CHECK(duplicate.empty(), "{}: duplicate key '{}' (each key may appear once)", what, duplicate);
  TL_CHECK(j.is_object(), "{}: expected a JSON object at the top level, found {}", what, json_kind(j));
  return j;
}

std::string_view json_kind(const ordered_json& j) {
  if (j.is_object()) return "object";
  if (j.is_array()) return "array";
  if (j.is_string()) return "string";
  if (j.is_boolean()) return "boolean";
  if (j.is_number_integer()) return "integer";
  if (j.is_number()) return "number";
  if (j.is_null()) return "null";
  return "other";
}

}  // namespace tl
