// Header-only target: LLVMFuzzerRunDriver is defined by libFuzzer (compiler-rt).
#include "CLibFuzzer.h"
