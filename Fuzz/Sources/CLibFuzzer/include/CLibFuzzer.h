// libFuzzer's driver entry (compiler-rt, linked in by -sanitize=fuzzer): runs the fuzzing loop on a
// callback, as libFuzzer's own main does. The fuzz targets call it from their `<Module>_main`, the
// symbol SwiftPM makes the executable's `main`.
#ifndef CLIBFUZZER_H
#define CLIBFUZZER_H
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
