// safetensors: the header (JSON, offsets, dtypes, shapes) and every tensor's bytes as floats.
#include "fuzz_support.h"
#include "pocket/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string path = fuzz::writeInput("model.safetensors", data, size);
    auto file = pocket::SafetensorsFile::open(path);
    if (!file.ok())
        return 0;
    for (const pocket::TensorInfo& t : (*file)->tensors())
        if (auto loaded = (*file)->load(t.name); loaded.ok())
            fuzz::consume(loaded->toFloat());
    return 0;
}
