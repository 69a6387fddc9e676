// Chat templates: detection from the Jinja text, rendering of each known format, errors.
#include <gtest/gtest.h>

#include <vector>

#include "../common/test_util.hpp"
#include "infer/chat_template.hpp"
#include "text/tokenizer.hpp"

namespace tl {
namespace {

using test::error_of;

// BitNet b1.58-2B-4T's tokenizer_config.json chat_template.
constexpr const char* kBitNetHf =
    "{% for message in messages %}{% set content = message['role'] | capitalize + ': ' + message['content'] "
    "| "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ "
    "content "
    "}}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}";

// Meta-Llama-3-8B-Instruct's template.
constexpr const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content "
    "}}{% "
    "endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% "
    "endif %}";

// The template Microsoft's convert-ms-to-gguf-bitnet.py writes into GGUFs.
constexpr const char* kBitNetConverter =
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if message['role'] == "
    "'user' "
    "%}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}{% elif message['role'] "
    "== "
    "'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

constexpr const char* kChatML =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
    "endif %}";

const std::vector<ChatMessage> kConversation = {{"system", "You are a helpful AI assistant."},
                                                {"user", "  Hello!\n"},
                                                {"assistant", "Hi there. "},
                                                {"user", "What is 2+2?"}};

TEST(ChatTemplate, DetectsKnownTemplatesBySubstrings) {
  EXPECT_EQ(detect_chat_format(kBitNetHf), ChatFormat::BitNet);
  EXPECT_EQ(detect_chat_format(kLlama3), ChatFormat::Llama3);
  EXPECT_EQ(detect_chat_format(kBitNetConverter), ChatFormat::BitNetCpp);
  EXPECT_EQ(detect_chat_format(kChatML), ChatFormat::ChatML);
  EXPECT_EQ(detect_chat_format(""), ChatFormat::BitNet);
  EXPECT_EQ(detect_chat_format("  \n"), ChatFormat::BitNet);
  const std::string e =
      error_of([] { detect_chat_format("{{ '[INST] ' + message['content'] + ' [/INST]' }}"); });
  EXPECT_NE(e.find("--chat-format bitnet|llama3"), std::string::npos) << e;
}

TEST(ChatTemplate, FormatNamesRoundTrip) {
  for (auto f : {ChatFormat::BitNet, ChatFormat::Llama3, ChatFormat::BitNetCpp, ChatFormat::ChatML})
    EXPECT_EQ(parse_chat_format(chat_format_name(f)), f);
  const std::string e = error_of([] { parse_chat_format("mistral"); });
  EXPECT_NE(e.find("'mistral'"), std::string::npos);
  EXPECT_NE(e.find("chatml"), std::string::npos);
}

TEST(ChatTemplate, BitNetMatchesTheHfTemplate) {
  // transformers' modeling_bitnet.py docstring example.
  const std::vector<ChatMessage> one = {{"user", "Hey, are you conscious? Can you talk to me?"}};
  EXPECT_EQ(render_chat(ChatFormat::BitNet, one, "<|begin_of_text|>"),
            "<|begin_of_text|>User: Hey, are you conscious? Can you talk to me?<|eot_id|>Assistant: ");
  // Roles capitalized, contents trimmed, bos only before the first message.
  EXPECT_EQ(render_chat(ChatFormat::BitNet, kConversation, "<|begin_of_text|>"),
            "<|begin_of_text|>System: You are a helpful AI assistant.<|eot_id|>User: Hello!<|eot_id|>"
            "Assistant: Hi there.<|eot_id|>User: What is 2+2?<|eot_id|>Assistant: ");
  EXPECT_EQ(render_chat(ChatFormat::BitNet, one, "", /*add_generation_prompt=*/false),
            "User: Hey, are you conscious? Can you talk to me?<|eot_id|>");
}

TEST(ChatTemplate, Llama3) {
  EXPECT_EQ(render_chat(ChatFormat::Llama3, kConversation, "<|begin_of_text|>"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful AI "
            "assistant.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, BitNetCppAsLlamaCliRendersIt) {
  EXPECT_EQ(render_chat(ChatFormat::BitNetCpp, kConversation, "<|begin_of_text|>"),
            "<|begin_of_text|>System: You are a helpful AI assistant.User:   Hello!\n<|eot_id|>Assistant: "
            "Hi there. User: What is 2+2?<|eot_id|>Assistant: ");
}

TEST(ChatTemplate, ChatML) {
  const std::vector<ChatMessage> two = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(
      render_chat(ChatFormat::ChatML, two, "<|begin_of_text|>"),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chat_stop_strings(ChatFormat::ChatML), std::vector<std::string>{"<|im_end|>"});
  EXPECT_EQ(chat_stop_strings(ChatFormat::BitNet), std::vector<std::string>{"<|eot_id|>"});
}

TEST(ChatTemplate, RejectsUnknownRolesAndEmptyChats) {
  const std::vector<ChatMessage> tool = {{"user", "hi"}, {"tool", "42"}};
  const std::string e = error_of([&] { render_chat(ChatFormat::BitNet, tool, ""); });
  EXPECT_NE(e.find("message 1 has role 'tool'"), std::string::npos) << e;
  EXPECT_NE(e.find("system, user or assistant"), std::string::npos) << e;
  EXPECT_NE(error_of([] { render_chat(ChatFormat::ChatML, {}, ""); }).find("no messages"), std::string::npos);
  const std::vector<ChatMessage> upper = {{"User", "hi"}};
  EXPECT_THROW(render_chat(ChatFormat::BitNet, upper, ""), Error);
}

TEST(ChatTemplate, SpecialTokensInTheRenderedTextBecomeTheirIds) {
  const Tokenizer tok = Tokenizer::byte_level(300);
  const std::vector<ChatMessage> one = {{"user", "hi"}};
  const auto ids = tok.encode(render_chat(ChatFormat::BitNet, one, tok.token(tok.bos_id())));
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 256);  // <|begin_of_text|> as one token, not 17 bytes
  EXPECT_EQ(tok.decode(ids), "<|begin_of_text|>User: hi<|eot_id|>Assistant: ");
}

}  // namespace
}  // namespace tl
