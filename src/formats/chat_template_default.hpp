// The chat template of microsoft/bitnet-b1.58-2B-4T's tokenizer_config.json (reference §4: "User: ...
// <|eot_id|>Assistant: "). `ternlab init` writes it into tokenizer_config.json, and `ternlab export` embeds
// it as tokenizer.chat_template when a checkpoint has none.
#pragma once
#include <string_view>

namespace tl {

inline constexpr std::string_view kBitNetChatTemplate =
    "{% for message in messages %}{% set content = message['role'] | capitalize + ': ' + "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + "
    "content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% "
    "endif %}";

}  // namespace tl
