// A plugin built against a different method API version: the registry must refuse it.
extern "C" __attribute__((visibility("default"))) int pocket_method_api_version()
{
    return 999;
}
extern "C" __attribute__((visibility("default"))) void* pocket_method_create()
{
    return nullptr;
}
