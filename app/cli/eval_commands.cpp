#include "eval_commands.h"

#include "compress_commands.h"
#include "store_commands.h"

#include "pocket/jobs/eval_job.h"
#include "pocket/jobs/recover_job.h"
#include "pocket/model/llama_model.h"

#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <sstream>

namespace cli {

namespace {

namespace fs = std::filesystem;

// "FILE" (task from its name), "TASK=FILE", or "TASK" (the bundled file of that task).
pocket::Result<pocket::ZeroShotJobTask> parseTaskArgument(const std::string& arg, const std::vector<pocket::ZeroShotJobTask>& bundled)
{
    std::string taskName, file = arg;
    if (const auto eq = arg.find('='); eq != std::string::npos) {
        taskName = arg.substr(0, eq);
        file = arg.substr(eq + 1);
    }
    std::error_code ec;
    if (taskName.empty() && !fs::exists(file, ec)) {
        // A task name alone: the bundled file.
        const auto task = pocket::parseZeroShotTask(arg);
        if (task && arg == pocket::zeroShotTaskName(*task)) {
            for (const auto& b : bundled)
                if (b.task == *task)
                    return b;
            return pocket::Error::usage(arg + ": no bundled file for this task; give its JSONL file (" + arg + "=FILE)", "tasks");
        }
        return pocket::Error{file + ": no such task file"};
    }
    const auto task = pocket::parseZeroShotTask(taskName.empty() ? file : taskName);
    if (!task) {
        std::string known;
        for (auto t : pocket::allZeroShotTasks()) known += (known.empty() ? "" : ", ") + std::string(pocket::zeroShotTaskName(t));
        return pocket::Error::usage(taskName.empty() ? file + ": cannot tell the task from the file name; write TASK=FILE (tasks: " + known + ")"
                                                     : "'" + taskName + "' is not a task (tasks: " + known + ")",
                                    "tasks");
    }
    return pocket::ZeroShotJobTask{*task, file};
}

int runZeroShot(const Globals& g, const ZeroShotOptions& o)
{
    pocket::ZeroShotJobParams params;
    params.modelPath = o.model;
    params.tokenizerPath = o.tokenizer;
    params.limit = o.limit;
    params.zeroShot.batch = o.batch;
    params.zeroShot.addBos = o.addBos;
    params.zeroShot.maxLength = o.maxLength;
    const auto bundled = pocket::bundledZeroShotTasks();
    if (o.tasks.empty()) {
        if (bundled.empty())
            return fail(g, "no task files given and none bundled (resources/eval/zeroshot not found): pass TASK=FILE arguments", kExitUsage);
        params.tasks = bundled;
    }
    for (const auto& arg : o.tasks) {
        auto task = parseTaskArgument(arg, bundled);
        if (!task)
            return fail(g, task.error());
        params.tasks.push_back(*task);
    }
    auto run = runOptions(o.precision, o.memoryBudget);
    if (!run)
        return fail(g, run.error());
    params.run = *run;
    pocket::setComputeThreads(o.threads);

    ProgressLine progress(!g.quiet);
    const pocket::RecorderOptions recording = recorderOptions(g);
    auto job = pocket::runZeroShotJob(params, registry(), &recording, [&](const pocket::ZeroShotJobProgress& p) {
        if (p.phase == pocket::ZeroShotJobProgress::Phase::Loading) {
            progress.show("loading weights " + std::to_string(p.tensorsLoaded) + "/" + std::to_string(p.tensorsTotal));
            return true;
        }
        const auto& s = p.scoring;
        const double rate = s.elapsedSeconds > 0 ? s.requestsDone / s.elapsedSeconds : 0;
        char line[200];
        std::snprintf(line, sizeof line, "%s (%d/%zu): %d/%d requests  %.0f/s  ETA %s", pocket::zeroShotTaskName(params.tasks[p.taskIndex].task),
                      p.taskIndex + 1, params.tasks.size(), s.requestsDone, s.requestsTotal, rate,
                      formatDuration(rate > 0 ? (s.requestsTotal - s.requestsDone) / rate : -1).c_str());
        progress.show(line);
        return true;
    });
    progress.finish();
    if (!job)
        return fail(g, job.error());

    ordered_json out{{"model", job->modelPath}, {"tokenizer", job->tokenizerPath}, {"add_bos", o.addBos}, {"limit", o.limit}};
    ordered_json tasks = ordered_json::array();
    std::ostringstream t;
    t << std::left << std::setw(15) << "task" << std::right << std::setw(7) << "items" << std::setw(16) << "acc %" << std::setw(16) << "acc_norm %"
      << std::setw(12) << "s/1000" << "\n";
    for (std::size_t i = 0; i < job->tasks.size(); ++i) {
        const pocket::ZeroShotTaskResult& r = job->tasks[i];
        const bool norm = pocket::zeroShotHasAccNorm(r.task);
        ordered_json j{{"task", pocket::zeroShotTaskName(r.task)}, {"file", params.tasks[i].path}, {"items", r.items},
                       {"acc", r.acc},  {"acc_stderr", r.accStderr}};
        if (norm) {
            j["acc_norm"] = r.accNorm;
            j["acc_norm_stderr"] = r.accNormStderr;
        }
        j["tokens"] = r.tokens;
        j["seconds"] = r.seconds;
        tasks.push_back(j);
        char accText[40], normText[40];
        std::snprintf(accText, sizeof accText, "%.2f ± %.2f", 100 * r.acc, 100 * r.accStderr);
        std::snprintf(normText, sizeof normText, "%.2f ± %.2f", 100 * r.accNorm, 100 * r.accNormStderr);
        t << std::left << std::setw(15) << pocket::zeroShotTaskName(r.task) << std::right << std::setw(7) << r.items << std::setw(18) << accText
          << std::setw(18) << (norm ? normText : "-") << std::fixed << std::setprecision(1) << std::setw(10)
          << (r.items > 0 ? 1000.0 * r.seconds / r.items : 0.0) << "\n";
    }
    out["tasks"] = tasks;
    out["mean_acc"] = job->meanAcc;
    out["average_dataset"] = job->averageName;
    out["load_s"] = job->loadSeconds;
    out["total_s"] = job->totalSeconds;
    out["threads"] = pocket::computeThreads();
    if (job->runId > 0)
        out["run_id"] = job->runId;
    t << std::fixed << std::setprecision(2) << "mean acc       " << 100 * job->meanAcc << "% over " << job->tasks.size() << " tasks (recorded as "
      << job->averageName << "); " << std::setprecision(1) << job->totalSeconds << " s in all\n";
    emit(g, out, t.str());
    return kExitOk;
}

int runRecover(const Globals& g, const RecoverOptions& o)
{
    pocket::RecoverJobParams params;
    params.archivePath = o.archive;
    params.outPath = o.out;
    params.overwrite = o.force;
    params.calibration.textPath = o.calibText;
    params.calibration.samples = o.calibSamples;
    params.calibration.length = o.calibLen;
    params.calibration.seed = o.seed;
    params.tokenizerPath = o.tokenizer;
    params.originalPath = o.original;
    params.types = o.types;
    if (o.objective != "nll" && o.objective != "kl")
        return fail(g, "--objective: '" + o.objective + "' is not nll or kl", kExitUsage);
    params.training.objective = o.objective == "kl" ? pocket::AdapterObjective::Kl : pocket::AdapterObjective::Nll;
    params.training.rank = o.rank;
    params.training.alpha = o.alpha;
    params.training.epochs = o.epochs;
    params.training.learningRate = o.lr;
    params.training.batch = o.batch;
    params.training.seed = o.seed;
    pocket::setComputeThreads(o.threads);

    ProgressLine progress(!g.quiet);
    auto job = pocket::runRecoverJob(params, registry(), [&](const pocket::RecoverJobProgress& p) {
        using Phase = pocket::RecoverJobProgress::Phase;
        if (p.phase == Phase::Loading)
            progress.show("loading weights " + std::to_string(p.tensorsLoaded) + "/" + std::to_string(p.tensorsTotal));
        else if (p.phase == Phase::Measuring)
            progress.show("measuring the objective before training");
        else if (p.phase == Phase::Writing)
            progress.show("writing the archive");
        else {
            const auto& s = p.step;
            const double rate = s.elapsedSeconds > 0 ? s.step / s.elapsedSeconds : 0;
            char line[160];
            std::snprintf(line, sizeof line, "training step %d/%d (epoch %d)  loss %.4f  ETA %s", s.step, s.steps, s.epoch + 1, s.loss,
                          formatDuration(rate > 0 ? (s.steps - s.step) / rate : -1).c_str());
            progress.show(line);
        }
        return true;
    });
    progress.finish();
    if (!job)
        return fail(g, job.error());
    ordered_json out{{"archive", o.archive},
                     {"out", job->outPath},
                     {"objective", o.objective},
                     {"rank", o.rank},
                     {"alpha", o.alpha},
                     {"adapters", job->adapters},
                     {"objective_before", job->objectiveBefore},
                     {"objective_after", job->objectiveAfter},
                     {"bpw_before", job->bpwBefore},
                     {"bpw_after", job->bpwAfter},
                     {"adapter_bpw", job->adapterBpw},
                     {"adapter_bits", job->adapterBits},
                     {"steps", job->losses.size()},
                     {"losses", job->losses},
                     {"train_s", job->trainSeconds},
                     {"total_s", job->totalSeconds},
                     {"threads", pocket::computeThreads()}};
    std::ostringstream t;
    t << std::fixed << std::setprecision(4) << "objective    " << o.objective << " " << job->objectiveBefore << " -> " << job->objectiveAfter
      << " on the " << o.calibSamples << " training windows\n"
      << std::setprecision(3) << "adapters     " << job->adapters << " matrices, rank " << o.rank << ", alpha " << o.alpha << ": +" << job->adapterBpw
      << " bits per compressed weight (" << job->bpwBefore << " -> " << job->bpwAfter << ")\n"
      << std::setprecision(1) << "training     " << job->losses.size() << " steps in " << job->trainSeconds << " s\n"
      << "written      " << job->outPath << "\n";
    emit(g, out, t.str());
    return kExitOk;
}

} // namespace

void addEvalCommands(CLI::App& app, EvalCommands& c)
{
    auto& o = c.zeroShotOptions;
    c.zeroshot = app.add_subcommand("zeroshot", "Zero-shot multiple-choice accuracy (acc, acc_norm) as lm-evaluation-harness scores it");
    c.zeroshot->add_option("MODEL", o.model, "HF folder, .safetensors file in one, .gguf file, llama2.c .bin, or .pllm archive")->required();
    c.zeroshot->add_option("TASKS", o.tasks,
                           "Task files: FILE (task from its name: piqa*, arc_easy*, arc_challenge*, hellaswag*, winogrande*, boolq*, "
                           "openbookqa*), TASK=FILE, or a task name for the bundled file (default: every bundled task)");
    c.zeroshot->add_option("--tokenizer", o.tokenizer, "tokenizer.model, tokenizer.json, tokenizer.bin or a .gguf (default: found beside the model)");
    c.zeroshot->add_option("--limit", o.limit, "Items per task, from the start of each file (default: all)")->check(CLI::Range(0, 1 << 30));
    c.zeroshot->add_option("--batch", o.batch, "Requests per forward pass (default 16; fewer when the log-probabilities would pass 256 MiB)")->check(CLI::Range(1, 4096));
    c.zeroshot->add_flag("--add-bos", o.addBos, "Start every context with BOS (the harness's add_bos_token; off by default, as in the harness)");
    c.zeroshot->add_option("--max-length", o.maxLength, "Tokens the model sees at most, truncated on the left (default: its max positions)")
        ->check(CLI::Range(1, 1 << 20));
    c.zeroshot->add_option("--threads", o.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
    addRunOptions(c.zeroshot, o.precision, o.memoryBudget);

    auto& r = c.recoverOptions;
    c.recover = app.add_subcommand("recover", "Train LoRA adapters on an archive's compressed matrices (weights frozen) and write an archive with them");
    c.recover->add_option("ARCHIVE", r.archive, ".pllm archive")->required();
    c.recover->add_option("--calib-text", r.calibText, "UTF-8 text to train on")->required();
    c.recover->add_option("--calib-samples", r.calibSamples, "Training windows (default 128)")->check(CLI::Range(1, 1 << 20));
    c.recover->add_option("--calib-len", r.calibLen, "Tokens per window, BOS included (default 256)")->check(CLI::Range(2, 1 << 20));
    c.recover->add_option("--seed", r.seed, "Seed of the windows, the adapters' start and the order of training (default 1)");
    c.recover->add_option("--rank", r.rank, "Adapter rank (default 32, the paper's)")->check(CLI::Range(1, 1 << 16));
    c.recover->add_option("--alpha", r.alpha, "Adapter alpha: the update is scaled by alpha/rank (default 64)");
    c.recover->add_option("--epochs", r.epochs, "Passes over the windows (default 1)")->check(CLI::Range(1, 1 << 16));
    c.recover->add_option("--lr", r.lr, "Adam learning rate (default 1e-4)")->check(CLI::PositiveNumber);
    c.recover->add_option("--batch", r.batch, "Windows per step (default 8)")->check(CLI::Range(1, 1 << 16));
    c.recover->add_option("--objective", r.objective, "nll: next-token loss on the text; kl: KL(original || model), needs --original (default nll)");
    c.recover->add_option("--original", r.original, "The uncompressed model, teacher of --objective kl");
    c.recover->add_option("--types", r.types, "Adapt only these matrix types, comma-separated (default: every compressed matrix)");
    c.recover->add_option("--tokenizer", r.tokenizer, "Tokenizer (default: the archive's own)");
    c.recover->add_option("-o,--out", r.out, "The archive to write (default: <archive>-lora.pllm beside it)");
    c.recover->add_flag("--force", r.force, "Overwrite the output file");
    c.recover->add_option("--threads", r.threads, "Compute threads (default: one per core)")->check(CLI::Range(1, 1024));
}

int runEvalCommands(const Globals& g, const EvalCommands& c)
{
    if (*c.zeroshot) return runZeroShot(g, c.zeroShotOptions);
    if (*c.recover) return runRecover(g, c.recoverOptions);
    return -1;
}

} // namespace cli
