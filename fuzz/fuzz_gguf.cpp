// GGUF: the file table (GgufFile::open), every tensor dequantised, the model as a checkpoint (llama
// and qwen2 metadata, q/k rows unpermuted) and the tokenizer in its metadata.
#include "fuzz_support.h"
#include "pocket/io/checkpoint.h"
#include "pocket/io/ggml_types.h"
#include "pocket/io/gguf.h"
#include "pocket/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string path = fuzz::writeInput("model.gguf", data, size);
    auto file = pocket::GgufFile::open(path);
    if (!file.ok())
        return 0;
    for (const pocket::GgufTensor& t : (*file)->tensors()) {
        if (t.elements() > (std::int64_t{1} << 24) || !pocket::ggmlTypeTraits(static_cast<std::uint32_t>(t.type)).dequantizable)
            continue;
        std::vector<float> values(static_cast<std::size_t>(t.elements()));
        if (pocket::dequantizeRow(t.type, (*file)->data(t), values.data(), t.elements()))
            fuzz::consume(values);
    }
    if (auto ckpt = pocket::openCheckpoint(path); ckpt.ok()) {
        (void)pocket::storedTypes(**ckpt);
        for (const pocket::TensorInfo& t : (*ckpt)->tensors())
            if (auto loaded = (*ckpt)->load(t.name); loaded.ok())
                fuzz::consume(loaded->toFloat());
    }
    if (auto tokenizer = pocket::loadGgufTokenizer(path); tokenizer.ok())
        fuzz::exercise(**tokenizer);
    return 0;
}
