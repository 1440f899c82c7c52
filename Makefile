# The project's commands. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# both run `make setup` first, which installs whatever is missing (scripts/setup.sh).
SHELL := /bin/bash
SWIFT ?= swift
SWIFT_FLAGS ?=
FUZZ_SECONDS ?= 60

.PHONY: setup build shim test test-unit fuzz demo bench bench-density clean bpf bpf-check bench-bpf bench-manager

setup:
	@bash scripts/setup.sh

build: setup bpf-check
	$(SWIFT) build $(SWIFT_FLAGS)

# The shim as nodes run it (release, Swift runtime linked in, position-dependent) in .build-node/release.
shim: setup bpf-check
	@bash scripts/release-build.sh containerd-shim-zeropod-v2

# The BPF programs (bpf/*.bpf.c) are compiled with clang -target bpf and embedded as a committed C
# array (Sources/CZPBPF/zpbpf_object.c); `bpf` regenerates it, `bpf-check` fails if it is stale.
bpf:
	@bash scripts/bpf-embed.sh

bpf-check:
	@bash scripts/bpf-embed.sh --check

# ZPBPF figures: load+attach, detach, map updates, connect latency direct vs redirected (root).
bench-bpf: setup bpf-check
	$(SWIFT) run -c release $(SWIFT_FLAGS) zpbpf-bench 1000

# Every test: pure unit tests and the privileged integration/end-to-end tests (root, real kernel).
test: setup bpf-check
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	@SWIFT_FLAGS="$(SWIFT_FLAGS)" bash scripts/test.sh

# Pure tests only (no root needed, no setup).
test-unit:
	$(SWIFT) test $(SWIFT_FLAGS) --filter '^(ZPCoreTests|ZPAPITests|ZPCLITests|ZPManagerTests|ZPScaleDownDriverTests)\.'

# libFuzzer targets for the protobuf and ttrpc frame decoders, FUZZ_SECONDS each.
fuzz: setup
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

# 200 busybox pods scaled down at once (node memory, time to scale all down, one restore among
# them, 20 woken together); about 15 minutes here. Not part of `make bench`.
bench-density: setup
	@BENCH_WORKLOADS=none BENCH_DENSITY_PODS=$${BENCH_DENSITY_PODS:-200} BENCH_ARGS="--memory-pods 0 --shim-start-trials 0 $${BENCH_ARGS:-}" bash scripts/bench.sh

# The manager with N idle fake shims (status servers without containers) and a burst of N phase
# changes against the Kubernetes API double: RSS, CPU, time until every label converged.
MANAGER_SHIMS ?= 200
bench-manager:
	$(SWIFT) build -c release $(SWIFT_FLAGS) --product zeropod-manager
	$(SWIFT) build -c release $(SWIFT_FLAGS) --product zeropod-manager-bench
	$$($(SWIFT) build -c release $(SWIFT_FLAGS) --show-bin-path)/zeropod-manager-bench $(MANAGER_SHIMS)

clean:
	rm -rf .build .build-fuzz .build-node
