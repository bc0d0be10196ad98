// tokenizer.json (with no tokenizer_config.json beside it): parsed, then strings encoded and decoded.
#include "fuzz_support.h"
#include "pocket/io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string path = fuzz::writeInput("tokenizer.json", data, size);
    if (auto tokenizer = pocket::loadTokenizer(path); tokenizer.ok())
        fuzz::exercise(**tokenizer);
    return 0;
}
