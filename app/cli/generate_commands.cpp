// pocketllm-cli's generate command (see generate_commands.h).
#include "generate_commands.h"

#include "compress_commands.h"

#include "pocket/io/text.h"
#include "pocket/io/tokenizer.h"
#include "pocket/model/generation.h"

#include <iomanip>
#include <sstream>

namespace cli {

namespace {

pocket::GenerateParams generateParams(const GenerateOptions& o)
{
    pocket::GenerateParams p;
    p.maxTokens = o.maxTokens;
    p.sampling.greedy = o.greedy;
    p.sampling.temperature = o.temperature;
    p.sampling.topK = o.topK;
    p.sampling.topP = o.topP;
    p.sampling.repetitionPenalty = o.repeatPenalty;
    p.sampling.seed = o.seed;
    p.context = o.context;
    p.overflow = o.noSlide ? pocket::ContextOverflow::Refuse : pocket::ContextOverflow::Slide;
    p.stopAtEos = !o.ignoreEos;
    return p;
}

int runGenerate(const Globals& g, const GenerateOptions& o)
{
    const pocket::GenerateParams params = generateParams(o);
    if (auto st = pocket::checkSamplingParams(params.sampling); !st)
        return fail(g, st.error());
    auto run = runOptions(o.precision, o.memoryBudget);
    if (!run)
        return fail(g, run.error());
    std::string promptText = o.prompt;
    if (!o.promptFile.empty()) {
        auto text = pocket::readTextFile(o.promptFile);
        if (!text)
            return fail(g, text.error());
        promptText = *text;
    }
    pocket::setComputeThreads(o.threads);
    ProgressLine progress(!g.quiet && !g.json);
    const auto loadStart = std::chrono::steady_clock::now();
    auto loaded = pocket::loadRunnableModel(o.model, registry(), *run, [&](int done, int total) {
        progress.show("loading weights " + std::to_string(done) + "/" + std::to_string(total));
        return true;
    });
    progress.finish();
    if (!loaded)
        return fail(g, loaded.error());
    const double loadSeconds = pocket::secondsSince(loadStart);
    const std::string tokenizerPath = o.tokenizer.empty() ? loaded->checkpoint->tokenizerPath() : o.tokenizer;
    if (tokenizerPath.empty())
        return fail(g, pocket::Error{o.model + ": no tokenizer beside the model or in the archive; give one",
                                     pocket::ErrorKind::Input, "tokenizer"});
    auto tokenizer = pocket::loadTokenizer(tokenizerPath);
    if (!tokenizer)
        return fail(g, tokenizer.error());
    std::vector<std::int32_t> prompt{(*tokenizer)->bosId()};
    const std::vector<std::int32_t> text = (*tokenizer)->encode(promptText);
    prompt.insert(prompt.end(), text.begin(), text.end());

    pocket::IncrementalDecoder stream(**tokenizer, prompt);
    if (!g.json) {
        std::cout << promptText << std::flush;
    }
    std::size_t printed = 0;
    auto result = pocket::generate(*loaded->model, prompt, params, (*tokenizer)->eosId(), [&](const pocket::GeneratedToken& t) {
        const std::string added = stream.push(t.id);
        printed += added.size();
        if (!g.json)
            std::cout << added << std::flush;
        return true;
    });
    if (!g.json) {
        const std::string all = stream.text(); // a UTF-8 sequence held back at the very end
        std::cout << pocket::sanitizeUtf8(all.size() > printed ? all.substr(printed) : std::string()) << "\n";
    }
    if (!result)
        return fail(g, result.error());
    const pocket::WeightMemory& memory = loaded->model->memory();
    ordered_json out{{"model", o.model},
                     {"tokenizer", tokenizerPath},
                     {"prompt", pocket::sanitizeUtf8(promptText)},
                     {"prompt_tokens", result->promptTokens},
                     {"text", pocket::sanitizeUtf8(stream.text())},
                     {"tokens", result->tokens},
                     {"generated", static_cast<std::int64_t>(result->tokens.size())},
                     {"stop", result->stopReason},
                     {"context_slid", result->slid},
                     {"prompt_s", result->promptSeconds},
                     {"generate_s", result->generateSeconds},
                     {"tokens_per_s", result->tokensPerSecond},
                     {"load_s", loadSeconds},
                     {"threads", pocket::computeThreads()},
                     {"precision", pocket::computePrecisionName(run->precision)},
                     {"memory", memoryJson(memory)},
                     {"peak_rss_mb", peakRssMb()}};
    std::ostringstream t;
    t << std::fixed << std::setprecision(1) << "generated    " << result->tokens.size() << " tokens (stop: " << result->stopReason
      << (result->slid ? ", the context slid" : "") << ") at " << result->tokensPerSecond << " tokens/s; prompt " << result->promptTokens
      << " tokens in " << result->promptSeconds << " s; load " << loadSeconds << " s\n"
      << "weights      " << pocket::describeMemory(memory) << " (" << pocket::computePrecisionName(run->precision) << ")\n"
      << "peak RSS     " << peakRssMb() << " MiB\n";
    if (g.json) {
        emit(g, out, "");
    } else if (!g.quiet) {
        std::cerr << t.str();
    }
    return kExitOk;
}

} // namespace

void addGenerateCommands(CLI::App& app, GenerateCommands& c)
{
    GenerateOptions& o = c.options;
    c.generate = app.add_subcommand("generate", "Generate text from a model, a GGUF or a .pllm archive, printing tokens as they come");
    c.generate->add_option("MODEL", o.model, "HF folder, .safetensors file in one, .gguf file, llama2.c .bin, or .pllm archive")->required();
    auto* prompt = c.generate->add_option("--prompt", o.prompt, "Text to continue (default: empty, BOS only)");
    c.generate->add_option("--prompt-file", o.promptFile, "UTF-8 file with the text to continue")->excludes(prompt);
    c.generate->add_option("--tokenizer", o.tokenizer, "Tokenizer file (default: the model's)");
    c.generate->add_option("--max-tokens", o.maxTokens, "Tokens to generate at most")->capture_default_str()->check(CLI::Range(0, 1 << 20));
    auto* greedy = c.generate->add_flag("--greedy", o.greedy, "Always the most likely token (no sampling)");
    c.generate->add_option("--temperature", o.temperature, "Sampling temperature")->capture_default_str()->excludes(greedy);
    c.generate->add_option("--top-k", o.topK, "Sample from the k most likely tokens (0: all)")->capture_default_str()->excludes(greedy);
    c.generate->add_option("--top-p", o.topP, "Sample from the smallest set of tokens whose probability reaches p")
        ->capture_default_str()
        ->excludes(greedy);
    c.generate->add_option("--repeat-penalty", o.repeatPenalty, "Penalty (>= 1) on tokens of the last 64")->capture_default_str();
    c.generate->add_option("--seed", o.seed, "Sampling seed (same seed, same text)")->capture_default_str();
    c.generate->add_option("--context", o.context, "KV cache size in tokens (default: the model's maximum, at most 4096)")
        ->check(CLI::Range(2, 1 << 20));
    c.generate->add_flag("--no-slide", o.noSlide, "Refuse a prompt longer than the context and stop when it is full (default: slide)");
    c.generate->add_flag("--ignore-eos", o.ignoreEos, "Go on past the end-of-sequence token");
    c.generate->add_option("--threads", o.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
    addRunOptions(c.generate, o.precision, o.memoryBudget);
}

int runGenerateCommands(const Globals& g, const GenerateCommands& c)
{
    if (*c.generate)
        return runGenerate(g, c.options);
    return -1;
}

} // namespace cli
