// .pllm archives: the container (table, checksums), the manifest, every group's payload, every
// uncompressed tensor and the embedded tokenizer.
#include "fuzz_support.h"
#include "pocket/archive/model_archive.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string path = fuzz::writeInput("model.pllm", data, size);
    auto archive = pocket::Archive::open(path, pocket::ContainerReader::Verify::All);
    if (!archive.ok())
        return 0;
    const pocket::ArchiveManifest& m = (*archive)->manifest();
    for (std::size_t g = 0; g < m.groups.size(); ++g)
        (void)(*archive)->groupPayload(g);
    for (const auto& t : m.tensors)
        if (auto loaded = (*archive)->tensor(t.name); loaded.ok())
            fuzz::consume(loaded->toFloat());
    if (auto tokenizer = (*archive)->tokenizerBytes(); tokenizer.ok())
        fuzz::consume(*tokenizer);
    return 0;
}
