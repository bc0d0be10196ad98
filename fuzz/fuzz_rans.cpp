// The rANS decoder of the archive's lossless stage on crafted streams: the first two bytes choose the
// symbol width and (with the stream's own count) what the caller expects; the rest is the stream.
// The decoder must refuse or decode, never read or write outside its buffers.
#include "fuzz_support.h"
#include "pocket/support/rans.h"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (size < 2)
        return 0;
    const int bits = 1 + data[0] % 16;
    const std::uint8_t* stream = data + 2;
    const std::size_t n = size - 2;
    auto info = pocket::rans::inspect(stream, n);
    // The expected count: the stream's own (capped) or off by data[1].
    std::uint64_t count = info.ok() ? info->count : data[1];
    if (data[1] & 1)
        count += data[1] >> 1;
    if (count > (1u << 20))
        return 0;
    std::vector<std::uint16_t> out(count);
    (void)pocket::rans::decode(stream, n, count, bits, out.data());
    std::vector<std::uint8_t> packed((count * static_cast<std::uint64_t>(bits) + 7) / 8);
    (void)pocket::rans::decodePacked(stream, n, count, bits, packed.data(), packed.size());
    fuzz::consume(out);
    return 0;
}
