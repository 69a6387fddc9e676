#include "infer/chat_template.hpp"

#include <cctype>

#include "core/enum_names.hpp"
#include "core/error.hpp"

namespace tl {

namespace {

constexpr std::array<EnumName<ChatFormat>, 4> kChatFormats{{{ChatFormat::BitNet, "bitnet"},
                                                            {ChatFormat::Llama3, "llama3"},
                                                            {ChatFormat::BitNetCpp, "bitnet-cpp"},
                                                            {ChatFormat::ChatML, "chatml"}}};

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Jinja's trim (Python str.strip() on the ASCII whitespace that chat text carries).
std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

// Jinja's capitalize for the three roles we accept: "user" -> "User".
std::string capitalized(std::string_view role) {
  std::string out(role);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (!out.empty()) out[0] = char(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

void check_messages(std::span<const ChatMessage> messages) {
  TL_CHECK(!messages.empty(), "chat: no messages");
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& role = messages[i].role;
    TL_CHECK(role == "system" || role == "user" || role == "assistant",
             "chat: message {} has role '{}': expected system, user or assistant", i, role);
  }
}

}  // namespace

ChatFormat parse_chat_format(std::string_view name) {
  return parse_enum(kChatFormats, name, "chat format");
}

std::string_view chat_format_name(ChatFormat format) {
  return name_of(kChatFormats, format);
}

ChatFormat detect_chat_format(std::string_view t) {
  if (trim(t).empty()) return ChatFormat::BitNet;
  // Most specific first: Microsoft's converter template ("...BITNETAssistant: ...") also says "Assistant".
  if (contains(t, "BITNET")) return ChatFormat::BitNetCpp;
  if (contains(t, "<|start_header_id|>")) return ChatFormat::Llama3;
  if (contains(t, "<|im_start|>")) return ChatFormat::ChatML;
  if (contains(t, "capitalize") && contains(t, "<|eot_id|>") && contains(t, "Assistant: "))
    return ChatFormat::BitNet;
  fail(
      "the model's chat template is not one ternlab recognises (it has no Jinja engine): pass "
      "--chat-format bitnet|llama3|bitnet-cpp|chatml to choose one");
}

std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages, std::string_view bos_token,
                        bool add_generation_prompt) {
  check_messages(messages);
  std::string out;
  switch (format) {
    case ChatFormat::BitNet:
      out += bos_token;
      for (const auto& m : messages) {
        out += capitalized(m.role);
        out += ": ";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "Assistant: ";
      break;
    case ChatFormat::Llama3:
      out += bos_token;
      for (const auto& m : messages) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
        out += trim(m.content);
        out += "<|eot_id|>";
      }
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::BitNetCpp:
      // llama-cli adds bos when it tokenizes; each user turn already opens the assistant's reply, so the
      // generation prompt adds nothing.
      out += bos_token;
      for (const auto& m : messages) {
        if (m.role == "system") {
          out += "System: " + m.content;
        } else if (m.role == "user") {
          out += "User: " + m.content + "<|eot_id|>Assistant: ";
        } else {
          out += m.content;
        }
      }
      break;
    case ChatFormat::ChatML:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      break;
  }
  return out;
}

std::vector<std::string> chat_stop_strings(ChatFormat format) {
  switch (format) {
    case ChatFormat::BitNet:
    case ChatFormat::Llama3:
    case ChatFormat::BitNetCpp:
      return {"<|eot_id|>"};
    case ChatFormat::ChatML:
      return {"<|im_end|>"};
  }
  return {};
}

}  // namespace tl
