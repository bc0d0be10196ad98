// A C interface to libsentencepiece, built as a module that core loads with dlopen(RTLD_LOCAL |
// RTLD_DEEPBIND). Why: Debian's libsentencepiece exports its own embedded copy of protobuf-lite,
// and a process that also loads the system libprotobuf (LibTorch does, through onnx_proto) crashes
// during start-up when one library's protobuf calls resolve into the other's. Loaded locally and
// deep-bound, each keeps its own protobuf.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

__attribute__((visibility("default"))) void* pocket_spm_load(const char* path, char* error, std::size_t errorSize)
{
    auto* processor = new sentencepiece::SentencePieceProcessor();
    const auto status = processor->Load(path);
    if (!status.ok()) {
        std::snprintf(error, errorSize, "%s", std::string(status.message()).c_str());
        delete processor;
        return nullptr;
    }
    return processor;
}

__attribute__((visibility("default"))) void pocket_spm_free(void* handle)
{
    delete static_cast<sentencepiece::SentencePieceProcessor*>(handle);
}

// Returns a malloc'ed array of *count ids (free with std::free), or nullptr on failure.
__attribute__((visibility("default"))) int* pocket_spm_encode(void* handle, const char* text, std::size_t length, std::size_t* count)
{
    std::vector<int> ids;
    const auto status = static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, length), &ids);
    *count = 0;
    if (!status.ok())
        return nullptr;
    int* out = static_cast<int*>(std::malloc(std::max<std::size_t>(1, ids.size()) * sizeof(int)));
    if (!out)
        return nullptr;
    std::memcpy(out, ids.data(), ids.size() * sizeof(int));
    *count = ids.size();
    return out;
}

// Returns a malloc'ed NUL-terminated string (free with std::free).
__attribute__((visibility("default"))) char* pocket_spm_decode(void* handle, const int* ids, std::size_t count)
{
    std::string text;
    static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + count), &text).IgnoreError();
    return strdup(text.c_str());
}

__attribute__((visibility("default"))) int pocket_spm_vocab_size(void* handle)
{
    return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}
__attribute__((visibility("default"))) int pocket_spm_bos_id(void* handle)
{
    return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->bos_id();
}
__attribute__((visibility("default"))) int pocket_spm_eos_id(void* handle)
{
    return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->eos_id();
}

// The piece of `id` ("▁" for spaces; valid while the processor lives), its score, and its kind:
// 0 normal, 1 unknown, 2 control, 3 unused, 4 byte.
__attribute__((visibility("default"))) const char* pocket_spm_piece(void* handle, int id)
{
    return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->IdToPiece(id).c_str();
}
__attribute__((visibility("default"))) float pocket_spm_score(void* handle, int id)
{
    return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetScore(id);
}
__attribute__((visibility("default"))) int pocket_spm_kind(void* handle, int id)
{
    const auto* p = static_cast<sentencepiece::SentencePieceProcessor*>(handle);
    return p->IsUnknown(id) ? 1 : p->IsControl(id) ? 2 : p->IsUnused(id) ? 3 : p->IsByte(id) ? 4 : 0;
}

} // extern "C"
