#include "pocket/model/zeroshot.h"

#include "pocket/io/text.h"
#include "pocket/support/timing.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <numeric>

namespace pocket {

using json = nlohmann::json;

// `auto var = *expr`, or return expr's error.
#define POCKET_TRY_ASSIGN(var, expr)   \
    auto var##Result_ = (expr);        \
    if (!var##Result_)                 \
        return var##Result_.error();   \
    auto var = std::move(*var##Result_)

namespace {

struct TaskName {
    ZeroShotTask task;
    const char* name;
};
// Longer prefixes first, so "arc_challenge" is not taken for something else.
constexpr TaskName kTasks[] = {
    {ZeroShotTask::Piqa, "piqa"},           {ZeroShotTask::ArcEasy, "arc_easy"},     {ZeroShotTask::ArcChallenge, "arc_challenge"},
    {ZeroShotTask::HellaSwag, "hellaswag"}, {ZeroShotTask::WinoGrande, "winogrande"}, {ZeroShotTask::BoolQ, "boolq"},
    {ZeroShotTask::OpenBookQa, "openbookqa"},
};

// Lower case, '-' and ' ' as '_' ("ARC-Challenge" -> "arc_challenge").
std::string normalised(const std::string& s)
{
    std::string out;
    for (char c : s)
        out += (c == '-' || c == ' ') ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

// Python's len(): code points of UTF-8 text.
std::size_t codePoints(const std::string& s)
{
    std::size_t n = 0;
    for (unsigned char c : s)
        n += (c & 0xC0) != 0x80;
    return n;
}

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string stripped(const std::string& s)
{
    std::size_t b = 0, e = s.size();
    while (b < e && isSpace(s[b])) ++b;
    while (e > b && isSpace(s[e - 1])) --e;
    return s.substr(b, e - b);
}

// A string field; an error naming it when absent or not a string.
Result<std::string> text(const json& j, const char* key)
{
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
        return Error{std::string("no text field \"") + key + "\""};
    return it->get<std::string>();
}

// The flat form's 0-based "label" (int or numeric string), or the public datasets' answer key among
// `keys` ("A".."E" or "1".."5"), or WinoGrande's "answer" "1"/"2".
Result<int> labelOf(const json& j, const std::vector<std::string>& keys = {})
{
    if (auto it = j.find("label"); it != j.end()) {
        if (it->is_number_integer())
            return it->get<int>();
        if (it->is_boolean())
            return it->get<bool>() ? 1 : 0;
        if (it->is_string() && !it->get<std::string>().empty() && std::isdigit(static_cast<unsigned char>(it->get<std::string>()[0])))
            return std::stoi(it->get<std::string>());
    }
    if (auto it = j.find("answerKey"); it != j.end() && it->is_string()) {
        const std::string key = it->get<std::string>();
        for (std::size_t i = 0; i < keys.size(); ++i)
            if (keys[i] == key)
                return static_cast<int>(i);
        return Error{"answerKey \"" + key + "\" is not one of the choices' labels"};
    }
    if (auto it = j.find("answer"); it != j.end()) {
        if (it->is_boolean())
            return it->get<bool>() ? 1 : 0; // BoolQ: ["no", "yes"]
        if (it->is_string() && (it->get<std::string>() == "1" || it->get<std::string>() == "2"))
            return std::stoi(it->get<std::string>()) - 1; // WinoGrande
    }
    return Error{"no label (\"label\", \"answerKey\" or \"answer\")"};
}

// "choices": either a list of strings, or {"text": [...], "label": [...]} (ARC, OpenBookQA).
Result<std::vector<std::string>> choicesOf(const json& j, std::vector<std::string>* keys)
{
    auto it = j.find("choices");
    if (it == j.end())
        return Error{"no \"choices\""};
    const json* list = &*it;
    if (it->is_object()) {
        if (!it->contains("text") || !(*it)["text"].is_array())
            return Error{"\"choices\" has no \"text\" list"};
        list = &(*it)["text"];
        if (keys && it->contains("label") && (*it)["label"].is_array())
            for (const auto& k : (*it)["label"]) keys->push_back(k.is_string() ? k.get<std::string>() : k.dump());
    }
    if (!list->is_array() || list->empty())
        return Error{"\"choices\" is not a list of texts"};
    std::vector<std::string> out;
    for (const auto& c : *list) {
        if (!c.is_string())
            return Error{"a choice is not a text"};
        out.push_back(c.get<std::string>());
    }
    return out;
}

// Every choice the continuation " " + choice of one prompt (the harness's default).
ZeroShotItem samePrompt(const std::string& prompt, const std::vector<std::string>& choices, int label)
{
    ZeroShotItem item;
    item.label = label;
    for (const auto& c : choices) {
        item.contexts.push_back(prompt);
        item.continuations.push_back(" " + c);
        item.choices.push_back(c);
    }
    return item;
}

Result<ZeroShotItem> buildItem(ZeroShotTask task, const json& j)
{
    std::vector<std::string> keys;
    switch (task) {
    case ZeroShotTask::Piqa: {
        POCKET_TRY_ASSIGN(goal, text(j, "goal"));
        std::vector<std::string> choices;
        if (j.contains("choices")) {
            POCKET_TRY_ASSIGN(c, choicesOf(j, nullptr));
            choices = c;
        } else {
            POCKET_TRY_ASSIGN(s1, text(j, "sol1"));
            POCKET_TRY_ASSIGN(s2, text(j, "sol2"));
            choices = {s1, s2};
        }
        POCKET_TRY_ASSIGN(label, labelOf(j));
        return samePrompt("Question: " + goal + "\nAnswer:", choices, label);
    }
    case ZeroShotTask::ArcEasy:
    case ZeroShotTask::ArcChallenge: {
        POCKET_TRY_ASSIGN(question, text(j, "question"));
        POCKET_TRY_ASSIGN(choices, choicesOf(j, &keys));
        POCKET_TRY_ASSIGN(label, labelOf(j, keys));
        return samePrompt("Question: " + question + "\nAnswer:", choices, label);
    }
    case ZeroShotTask::OpenBookQa: {
        auto stem = j.contains("question_stem") ? text(j, "question_stem") : text(j, "question");
        if (!stem)
            return Error{"no text field \"question_stem\" (or \"question\")"};
        POCKET_TRY_ASSIGN(choices, choicesOf(j, &keys));
        POCKET_TRY_ASSIGN(label, labelOf(j, keys));
        return samePrompt(*stem, choices, label);
    }
    case ZeroShotTask::BoolQ: {
        POCKET_TRY_ASSIGN(question, text(j, "question"));
        // The harness's "{{passage}}\nQuestion: {{question}}?\nAnswer:"; a file without passages
        // renders the template with an empty one.
        const std::string passage = j.contains("passage") && j["passage"].is_string() ? j["passage"].get<std::string>() : "";
        POCKET_TRY_ASSIGN(label, labelOf(j));
        return samePrompt(passage + "\nQuestion: " + question + "?\nAnswer:", {"no", "yes"}, label);
    }
    case ZeroShotTask::HellaSwag: {
        POCKET_TRY_ASSIGN(activity, text(j, "activity_label"));
        POCKET_TRY_ASSIGN(ctxA, text(j, "ctx_a"));
        POCKET_TRY_ASSIGN(ctxB, text(j, "ctx_b"));
        if (!j.contains("endings") || !j["endings"].is_array())
            return Error{"no \"endings\" list"};
        // Python's str.capitalize(): the first character upper case, the rest lower case (ASCII here).
        std::string capitalised = ctxB;
        for (std::size_t i = 0; i < capitalised.size(); ++i)
            capitalised[i] = static_cast<char>(i == 0 ? std::toupper(static_cast<unsigned char>(capitalised[i]))
                                                      : std::tolower(static_cast<unsigned char>(capitalised[i])));
        const std::string query = hellaswagPreprocess(activity + ": " + ctxA + " " + capitalised);
        std::vector<std::string> endings;
        for (const auto& e : j["endings"]) {
            if (!e.is_string())
                return Error{"an ending is not a text"};
            endings.push_back(hellaswagPreprocess(e.get<std::string>()));
        }
        POCKET_TRY_ASSIGN(label, labelOf(j));
        return samePrompt(query, endings, label);
    }
    case ZeroShotTask::WinoGrande: {
        POCKET_TRY_ASSIGN(sentence, text(j, "sentence"));
        POCKET_TRY_ASSIGN(o1, text(j, "option1"));
        POCKET_TRY_ASSIGN(o2, text(j, "option2"));
        const auto blank = sentence.find('_');
        if (blank == std::string::npos)
            return Error{"the sentence has no \"_\" to fill"};
        POCKET_TRY_ASSIGN(label, labelOf(j));
        // Partial scoring: each option completes its own context; the rest of the sentence is the
        // shared continuation (doc_to_target: sentence[index + 1:].strip()).
        ZeroShotItem item;
        item.label = label;
        const std::string rest = stripped(sentence.substr(blank + 1));
        for (const std::string& option : {o1, o2}) {
            item.contexts.push_back(sentence.substr(0, blank) + option);
            item.continuations.push_back(" " + rest);
            item.choices.push_back(option);
        }
        return item;
    }
    }
    return Error{"unknown task"};
}

} // namespace

const char* zeroShotTaskName(ZeroShotTask task)
{
    for (const auto& t : kTasks)
        if (t.task == task)
            return t.name;
    return "?";
}

std::optional<ZeroShotTask> parseZeroShotTask(const std::string& nameOrFile)
{
    std::string base = nameOrFile;
    if (const auto slash = base.find_last_of('/'); slash != std::string::npos)
        base = base.substr(slash + 1);
    base = normalised(base);
    std::optional<ZeroShotTask> best;
    std::size_t bestLength = 0;
    for (const auto& t : kTasks) {
        const std::size_t n = std::char_traits<char>::length(t.name);
        if (base.compare(0, n, t.name) == 0 && (base.size() == n || !std::isalnum(static_cast<unsigned char>(base[n]))) && n > bestLength) {
            best = t.task;
            bestLength = n;
        }
    }
    // The public ARC files: "arc_easy" is also written "arc_e", and the challenge set "arc_c".
    if (!best && (base.rfind("arc_e", 0) == 0))
        return ZeroShotTask::ArcEasy;
    if (!best && (base.rfind("arc_c", 0) == 0))
        return ZeroShotTask::ArcChallenge;
    return best;
}

std::vector<ZeroShotTask> allZeroShotTasks()
{
    std::vector<ZeroShotTask> out;
    for (const auto& t : kTasks) out.push_back(t.task);
    return out;
}

bool zeroShotHasAccNorm(ZeroShotTask task) { return task != ZeroShotTask::BoolQ && task != ZeroShotTask::WinoGrande; }

std::string hellaswagPreprocess(const std::string& input)
{
    // text = text.strip(); text = text.replace(" [title]", ". "); text = re.sub("\\[.*?\\]", "", text);
    // text = text.replace("  ", " ")
    std::string s = stripped(input);
    for (std::size_t at = s.find(" [title]"); at != std::string::npos; at = s.find(" [title]", at + 2))
        s.replace(at, 8, ". ");
    std::string noBrackets;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '[') { // re's "." stops at a line break
            const auto close = s.find(']', i + 1);
            if (close != std::string::npos && s.find('\n', i) > close) {
                i = close;
                continue;
            }
        }
        noBrackets += s[i];
    }
    // str.replace replaces non-overlapping occurrences left to right, once.
    std::string out;
    for (std::size_t i = 0; i < noBrackets.size(); ++i) {
        if (noBrackets[i] == ' ' && i + 1 < noBrackets.size() && noBrackets[i + 1] == ' ') {
            out += ' ';
            ++i;
            continue;
        }
        out += noBrackets[i];
    }
    return out;
}

Result<ZeroShotItem> buildZeroShotItem(ZeroShotTask task, const std::string& jsonLine)
{
    try {
        const json j = json::parse(jsonLine);
        if (!j.is_object())
            return Error{"not a JSON object"};
        POCKET_TRY_ASSIGN(item, buildItem(task, j));
        if (item.label < 0 || item.label >= static_cast<int>(item.choices.size()))
            return Error{"label " + std::to_string(item.label) + " is not one of the " + std::to_string(item.choices.size()) + " choices"};
        return item;
    } catch (const json::exception& e) {
        return Error{std::string("not valid JSON: ") + e.what()};
    }
}

Result<std::vector<ZeroShotItem>> loadZeroShotTask(ZeroShotTask task, const std::string& path, int limit)
{
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return fileError(path, "cannot open the task file");
    std::vector<ZeroShotItem> items;
    std::string line;
    int lineNo = 0;
    while (std::getline(in, line)) {
        ++lineNo;
        if (stripped(line).empty())
            continue;
        auto item = buildZeroShotItem(task, line);
        if (!item)
            return fileError(path, "line " + std::to_string(lineNo) + " is not a " + zeroShotTaskName(task) + " item: " + item.message());
        items.push_back(std::move(*item));
        if (limit > 0 && static_cast<int>(items.size()) >= limit)
            break;
    }
    if (in.bad())
        return fileError(path, "read error");
    if (items.empty())
        return fileError(path, std::string("no ") + zeroShotTaskName(task) + " items in the file");
    return items;
}

EncodedRequest encodeZeroShotRequest(const Tokenizer& tokenizer, std::string context, std::string continuation, int maxLength, bool addBos)
{
    std::vector<std::int32_t> contextTokens, continuationTokens;
    if (context.empty()) {
        contextTokens = {tokenizer.bosId() >= 0 ? tokenizer.bosId() : tokenizer.eosId()}; // the harness's prefix_token_id
        continuationTokens = tokenizer.encode(continuation);
    } else {
        // _encode_pair: the context's trailing white space moves into the continuation.
        std::size_t keep = context.size();
        while (keep > 0 && isSpace(context[keep - 1])) --keep;
        continuation = context.substr(keep) + continuation;
        context.resize(keep);
        std::vector<std::int32_t> whole = tokenizer.encode(context + continuation);
        contextTokens = tokenizer.encode(context);
        if (addBos) {
            whole.insert(whole.begin(), tokenizer.bosId());
            contextTokens.insert(contextTokens.begin(), tokenizer.bosId());
        }
        const std::size_t cut = std::min(contextTokens.size(), whole.size());
        continuationTokens.assign(whole.begin() + static_cast<std::ptrdiff_t>(cut), whole.end());
    }
    std::vector<std::int32_t> all = contextTokens;
    all.insert(all.end(), continuationTokens.begin(), continuationTokens.end());
    EncodedRequest r;
    if (all.size() < 2) // nothing to predict (a blank context and an empty continuation)
        return r;
    // (context_enc + continuation_enc)[-(max_length + 1):][:-1]
    const std::size_t keepTokens = std::min(all.size(), static_cast<std::size_t>(maxLength) + 1);
    r.input.assign(all.end() - static_cast<std::ptrdiff_t>(keepTokens), all.end() - 1);
    r.target = continuationTokens;
    r.continuationTokens = static_cast<int>(std::min(continuationTokens.size(), r.input.size()));
    return r;
}

void summariseZeroShot(ZeroShotTaskResult& result, const std::vector<ZeroShotItem>& items)
{
    const std::size_t n = result.scores.size();
    result.items = static_cast<int>(n);
    std::vector<double> acc, accNorm;
    for (std::size_t i = 0; i < n; ++i) {
        ZeroShotItemScore& s = result.scores[i];
        const auto& ll = s.logLikelihoods;
        const auto best = std::max_element(ll.begin(), ll.end()) - ll.begin(); // np.argmax: the first maximum
        std::size_t bestNorm = 0;
        double bestNormValue = -INFINITY;
        for (std::size_t c = 0; c < ll.size(); ++c) {
            const double v = ll[c] / static_cast<double>(std::max<std::size_t>(1, codePoints(items[i].choices[c])));
            if (v > bestNormValue) {
                bestNormValue = v;
                bestNorm = c;
            }
        }
        s.correct = best == items[i].label;
        s.correctNorm = static_cast<int>(bestNorm) == items[i].label;
        acc.push_back(s.correct ? 1.0 : 0.0);
        accNorm.push_back(s.correctNorm ? 1.0 : 0.0);
    }
    // mean_stderr: sqrt(sum((x - mu)^2) / (n - 1)) / sqrt(n)
    auto meanAndStderr = [](const std::vector<double>& v, double& mean, double& stderr_) {
        const double n = static_cast<double>(v.size());
        mean = v.empty() ? 0 : std::accumulate(v.begin(), v.end(), 0.0) / n;
        double ss = 0;
        for (double x : v) ss += (x - mean) * (x - mean);
        stderr_ = v.size() > 1 ? std::sqrt(ss / (n - 1)) / std::sqrt(n) : 0;
    };
    meanAndStderr(acc, result.acc, result.accStderr);
    meanAndStderr(accNorm, result.accNorm, result.accNormStderr);
    if (!zeroShotHasAccNorm(result.task))
        result.accNorm = result.accNormStderr = 0;
}

// Long: batching (sort by length, pad, bound the log-probability memory) and scoring in one loop.
Result<ZeroShotTaskResult> evaluateZeroShot(const LlamaModel& model, const Tokenizer& tokenizer, ZeroShotTask task,
                                            const std::vector<ZeroShotItem>& items, const ZeroShotParams& params,
                                            const std::function<bool(const ZeroShotProgress&)>& onProgress)
{
    const auto start = std::chrono::steady_clock::now();
    if (params.batch < 1)
        return Error::usage("batch must be at least 1", "batch");
    const int maxLength = params.maxLength > 0 ? params.maxLength : static_cast<int>(model.config().maxPositions);
    struct Request {
        std::size_t item, choice;
        EncodedRequest enc;
    };
    std::vector<Request> requests;
    for (std::size_t i = 0; i < items.size(); ++i)
        for (std::size_t c = 0; c < items[i].contexts.size(); ++c) {
            Request r{i, c, encodeZeroShotRequest(tokenizer, items[i].contexts[c], items[i].continuations[c], maxLength, params.addBos)};
            if (!r.enc.input.empty()) // else nothing is scored: its log-likelihood stays 0
                requests.push_back(std::move(r));
        }
    // Longest first (the harness's order), so a batch's padding is small.
    std::vector<std::size_t> order(requests.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return requests[a].enc.input.size() > requests[b].enc.input.size(); });

    ZeroShotTaskResult result;
    result.task = task;
    result.scores.resize(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) result.scores[i].logLikelihoods.assign(items[i].contexts.size(), 0.0);
    // A forward pass's log-probabilities (batch x length x vocabulary floats) stay under 256 MiB.
    const std::int64_t vocab = model.config().vocabSize;
    const std::int32_t pad = tokenizer.eosId() >= 0 && tokenizer.eosId() < vocab ? tokenizer.eosId() : 0;
    ZeroShotProgress progress;
    progress.requestsTotal = static_cast<int>(requests.size());
    for (std::size_t b = 0; b < order.size();) {
        const std::size_t length = requests[order[b]].enc.input.size() + 1;
        const std::int64_t byMemory = std::max<std::int64_t>(1, (std::int64_t{256} << 20) / (4 * vocab * static_cast<std::int64_t>(length)));
        const std::size_t end = std::min(order.size(), b + static_cast<std::size_t>(std::min<std::int64_t>(params.batch, byMemory)));
        std::vector<std::vector<std::int32_t>> batch;
        for (std::size_t k = b; k < end; ++k) {
            const EncodedRequest& e = requests[order[k]].enc;
            std::vector<std::int32_t> seq = e.input;
            seq.push_back(e.target.empty() ? pad : e.target.back()); // the last target is predicted by the last input position
            seq.resize(length, pad);                                    // right padding: earlier positions are unaffected
            batch.push_back(std::move(seq));
        }
        auto nll = model.nextTokenNll(batch);
        if (!nll)
            return nll.error();
        for (std::size_t k = b; k < end; ++k) {
            const Request& r = requests[order[k]];
            const auto& row = (*nll)[k - b];
            const std::size_t inputLength = r.enc.input.size();
            double sum = 0;
            for (std::size_t t = inputLength - static_cast<std::size_t>(r.enc.continuationTokens); t < inputLength; ++t) sum -= row[t];
            result.scores[r.item].logLikelihoods[r.choice] = sum;
        }
        result.tokens += static_cast<std::int64_t>(batch.size() * length);
        progress.requestsDone = static_cast<int>(end);
        progress.elapsedSeconds = secondsSince(start);
        if (onProgress && !onProgress(progress))
            return Error::cancelled();
        b = end;
    }
    summariseZeroShot(result, items);
    result.seconds = secondsSince(start);
    return result;
}

} // namespace pocket
