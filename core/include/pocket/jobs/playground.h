// The playground: one prompt, the original model and a compressed one (an archive, a GGUF, any
// model) generating side by side, token by token. Each token of the compressed model is scored
// by the original on the compressed model's own text (a third pass over the original with a KV
// cache): its probability there, the KL divergence of the two next-token distributions, and the
// original's top choices; in greedy mode the first position where the two texts part is marked.
// The one code path behind the workbench's Playground tab (and its tests). Call from one thread.
#pragma once

#include "pocket/archive/archive_checkpoint.h"
#include "pocket/methods/method_registry.h"
#include "pocket/model/generation.h"
#include "pocket/support/result.h"

#include <atomic>
#include <functional>
#include <string>
#include <vector>

namespace pocket {

struct PlaygroundRequest {
    std::string originalPath;   // a model (HF folder, llama2.c, GGUF) or an archive
    std::string compressedPath; // an archive, a GGUF, or a model
    std::string tokenizerPath;  // "" = the original's
    std::string prompt;         // "" = BOS only
    GenerateParams generate;
    RunOptions compressedRun;   // precision and memory budget of the compressed model
    RunOptions originalRun;     // of the original (fp32, all decoded by default)
};

struct PlaygroundToken {
    enum class Side { Original, Compressed };
    Side side = Side::Original;
    int index = 0;              // 0 = the first generated token of that side
    std::int32_t id = 0;
    std::string text;           // the text it adds (may be empty until a UTF-8 sequence completes)
    std::string piece;          // the token on its own, decoded
    float probability = 0;      // its model's probability of it
    TokenAgreement agreement;   // Compressed side only: how the original sees it
    bool firstDivergence = false; // Compressed side, greedy: the first token that differs from the original's
    std::vector<std::pair<std::string, float>> originalTop; // Compressed side: the original's top choices, decoded
};

struct PlaygroundResult {
    std::vector<std::int32_t> original, compressed; // generated tokens
    std::string originalText, compressedText;
    int promptTokens = 0;
    int divergenceAt = -1;      // index of the first differing token (-1: none)
    double meanKl = 0;          // over the compressed model's tokens
    double originalTokensPerSecond = 0;
    double compressedTokensPerSecond = 0;
    WeightMemory originalMemory, compressedMemory;
    std::string originalStop, compressedStop;
};

enum class PlaygroundPhase { LoadingOriginal, LoadingCompressed, Generating };

// Runs the two models to the end (or until `cancel`); onToken sees every token as it comes.
// Errors name the file; a cancelled run returns Error::cancelled().
Result<PlaygroundResult> runPlayground(const PlaygroundRequest& request, const MethodRegistry& registry,
                                       const std::function<void(const PlaygroundToken&)>& onToken,
                                       const std::function<void(PlaygroundPhase)>& onPhase = {}, const std::atomic<bool>* cancel = nullptr);

} // namespace pocket
