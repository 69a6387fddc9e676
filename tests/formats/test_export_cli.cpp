// `ternlab export` on checkpoints made by `ternlab init`: every --type, the file read back; bad flags and
// impossible exports exit non-zero with a clear message and leave no file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../common/test_util.hpp"
#include "core/file.hpp"
#include "deploy_test_util.hpp"
#include "formats/chat_template_default.hpp"
#include "formats/checkpoint.hpp"
#include "formats/import.hpp"
#include "model/quant.hpp"

namespace tl {
namespace {

using test::run_command;
using test::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kBin = TERNLAB_BINARY;
const std::string kShape = " --hidden 256 --ffn 512 --layers 2 --heads 4 --kv-heads 2 --vocab 512 --ctx 128";

// A path quoted for the shell.
std::string q(const fs::path& p) {
  std::string s = p.string();
  s.insert(s.begin(), '\'');
  s.push_back('\'');
  return s;
}

TEST(ExportCli, EveryTypeFromAnInitCheckpoint) {
  TempDir dir;
  const auto init = run_command(kBin + " init --preset tiny" + kShape + " -o " + q(dir / "ck"));
  ASSERT_EQ(init.code, 0) << init.out;
  // init writes BitNet 2B-4T's chat template into tokenizer_config.json
  const auto tc = nlohmann::json::parse(read_file(dir / "ck" / "tokenizer_config.json"));
  EXPECT_EQ(tc.at("chat_template").get<std::string>(), kBitNetChatTemplate);
  const Model ck = load_checkpoint(dir / "ck");
  for (const char* type : {"tq2_0", "tq1_0", "i2_s", "f16", "f32"}) {
    const fs::path out = dir / (std::string(type) + ".gguf");
    const auto r = run_command(kBin + " export " + q(dir / "ck") + " -o " + q(out) + " --type " + type);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_THAT(r.out, AllOf(HasSubstr("wrote"), HasSubstr(type), HasSubstr("from tokenizer_config.json")));
    const GgufModel g = import_gguf(out);
    EXPECT_EQ(g.config.hidden_size, 256);
    EXPECT_EQ(g.config.vocab_size, 512);
    EXPECT_EQ(g.chat_template, kBitNetChatTemplate);
    EXPECT_EQ(g.format.name, "ck");
    EXPECT_EQ(g.format.padding_tokens, 0u);
    for (const auto& v : ck.views)
      if (v.kind == ParamKind::Linear) {
        const auto a = quantize_weight(ck, v), b = quantize_weight(g.model, g.model.view(v.name));
        ASSERT_EQ(a.codes, b.codes) << type << " " << v.name;
      }
  }
  // --json, --embed f32, --name; an existing output needs --force
  const fs::path out = dir / "i2_s.gguf";
  auto r = run_command(kBin + " export " + q(dir / "ck") + " -o " + q(out) + " --type i2_s");
  EXPECT_NE(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("exists; pass --force"));
  r = run_command(kBin + " export " + q(dir / "ck") + " -o " + q(out) +
                  " --type i2_s --embed f32 --name mine --force --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j.at("embed_type"), "F32");
  EXPECT_EQ(j.at("file_type"), 40);
  EXPECT_EQ(import_gguf(out).format.name, "mine");

  // `info` opens every format the front door opens: the GGUF's codes are the checkpoint's.
  const auto info_ck = run_command(kBin + " -q info --json " + q(dir / "ck"));
  const auto info_gguf = run_command(kBin + " -q info --json " + q(dir / "tq2_0.gguf"));
  ASSERT_EQ(info_ck.code, 0) << info_ck.out;
  ASSERT_EQ(info_gguf.code, 0) << info_gguf.out;
  const auto jc = nlohmann::json::parse(info_ck.out), jg = nlohmann::json::parse(info_gguf.out);
  EXPECT_EQ(jc.at("format"), "checkpoint");
  EXPECT_EQ(jg.at("format"), "gguf");
  EXPECT_EQ(jg.at("gguf").at("arch"), "bitnet");
  for (const char* k :
       {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "vocab_size", "max_position_embeddings", "hidden_act"})
    EXPECT_EQ(jg.at("config").at(k), jc.at("config").at(k)) << k;
  EXPECT_EQ(jg.at("config").at("quantization_mode"), "offline");  // a GGUF's scales are fixed by the file
  EXPECT_EQ(jg.at("params").at("linear"), jc.at("params").at("linear"));
  for (const char* k : {"code_neg", "code_zero", "code_pos"})
    EXPECT_NEAR(double(jg.at("ternary").at(k)), double(jc.at("ternary").at(k)), 1e-12) << k;
  const auto plain = run_command(kBin + " -q info --summary " + q(dir / "tq2_0.gguf"));
  ASSERT_EQ(plain.code, 0) << plain.out;
  EXPECT_THAT(plain.out, HasSubstr("GGUF: "));
  const fs::path not_gguf = dir.write("notes.txt", "not a model");
  const auto bad = run_command(kBin + " info " + q(not_gguf));
  EXPECT_NE(bad.code, 0);
  EXPECT_THAT(bad.out, HasSubstr("neither a checkpoint directory nor a GGUF file"));
}

TEST(ExportCli, RefusalsLeaveNoFile) {
  TempDir dir;
  ASSERT_EQ(run_command(kBin + " init --preset tiny -o " + q(dir / "tiny")).code, 0);
  ASSERT_EQ(
      run_command(kBin + " init --preset tiny --hidden 128 --ffn 256 --heads 2 --kv-heads 1 --act silu -o " +
                  q(dir / "silu"))
          .code,
      0);
  struct Bad {
    std::string args, message;
  };
  const Bad bad[] = {
      {q(dir / "tiny") + " --type q4_0", "unknown GGUF export type 'q4_0'"},
      {q(dir / "tiny") + " --type tq2_0",
       "has rows of 64 weights (in_features); TQ2_0 needs a multiple of 256"},
      {q(dir / "tiny") + " --type i2_s --embed bf16", "--embed must be f16 or f32"},
      {q(dir / "silu") + " --type i2_s", "hidden_act is silu"},
      {q(dir / "nowhere") + " --type f32", "not a checkpoint directory"},
  };
  fs::create_directories(dir / "out");
  for (const auto& b : bad) {
    const auto r = run_command(kBin + " export " + b.args + " -o " + q(dir / "out" / "m.gguf"));
    EXPECT_NE(r.code, 0) << b.args;
    EXPECT_THAT(r.out, HasSubstr(b.message)) << b.args;
  }
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "out"), fs::directory_iterator()), 0)
      << "a failed export leaves neither the file nor a temporary";
}

}  // namespace
}  // namespace tl
