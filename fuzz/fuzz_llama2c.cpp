// llama2.c legacy .bin: the header's plausibility and sizes, then every tensor as floats.
#include "fuzz_support.h"
#include "pocket/io/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string path = fuzz::writeInput("model.bin", data, size);
    auto ckpt = pocket::openCheckpoint(path);
    if (!ckpt.ok())
        return 0;
    for (const pocket::TensorInfo& t : (*ckpt)->tensors())
        if (auto loaded = (*ckpt)->load(t.name); loaded.ok())
            fuzz::consume(loaded->toFloat());
    return 0;
}
