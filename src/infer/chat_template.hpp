// Chat prompts: a list of {role, content} messages rendered the way the model was trained to read them.
// No Jinja engine: as llama.cpp does, the template text that comes with a model is recognised by
// distinctive substrings and rendered by C++ code for that known format.
//
//   bitnet      BitNet b1.58-2B-4T's Hugging Face template: bos, then "Role: content<|eot_id|>" per message
//               (role capitalized, content trimmed); generation prompt "Assistant: "
//   llama3      LLaMA-3 instruct: bos, "<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>"
//   bitnet-cpp  what bitnet.cpp's llama-cli renders for GGUFs whose template mentions "BITNET" (Microsoft's
//               converter): "System: s", "User: u<|eot_id|>Assistant: ", assistant content as is
//   chatml      "<|im_start|>role\ncontent<|im_end|>\n"; generation prompt "<|im_start|>assistant\n"
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tl {

enum class ChatFormat { BitNet, Llama3, BitNetCpp, ChatML };

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

// "bitnet" | "llama3" | "bitnet-cpp" | "chatml"; anything else is an error listing these.
ChatFormat parse_chat_format(std::string_view name);
std::string_view chat_format_name(ChatFormat format);

// The format of a model's Jinja chat template. Empty: bitnet (the format BitNet b1.58 was tuned on).
// Errors: a template none of the known formats matches (the message suggests --chat-format).
ChatFormat detect_chat_format(std::string_view jinja_template);

// The prompt text. `bos_token` is written where the template puts bos_token (empty: none). Special tokens
// are written as text ("<|eot_id|>"); Tokenizer::encode turns them into their ids. Errors: no messages, a
// role other than system, user or assistant.
std::string render_chat(ChatFormat format, std::span<const ChatMessage> messages, std::string_view bos_token,
                        bool add_generation_prompt = true);

// Text that ends an assistant turn in this format: generation should stop on it (in addition to the
// model's stop tokens, for vocabularies where it is not a single token).
std::vector<std::string> chat_stop_strings(ChatFormat format);

}  // namespace tl
