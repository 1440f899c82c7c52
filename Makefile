# The project's commands. `make demo` and `make test` work on a fresh Debian 12 machine as root:
# both run `make setup` first, which installs whatever is missing (scripts/setup.sh).
SHELL := /bin/bash
SWIFT ?= swift
SWIFT_FLAGS ?=
FUZZ_SECONDS ?= 60
# A short fuzz run of every target inside `make test` (seconds per target), and `make fuzz-long`'s
# inputs per target.
FUZZ_TEST_SECONDS ?= 5
FUZZ_LONG_RUNS ?= 10000000

.PHONY: setup build shim format lint test test-images test-unit fuzz fuzz-long demo bench bench-density clean bpf bpf-check bench-bpf bench-manager images

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

# Every test: pure unit tests and the privileged integration/end-to-end tests (root, real kernel),
# then a short run of every fuzz target (FUZZ_TEST_SECONDS each; the first build of the fuzz
# targets takes a few minutes and is cached in .build-fuzz).
test: setup bpf-check
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	@status=0; SWIFT_FLAGS="$(SWIFT_FLAGS)" bash scripts/test.sh || status=1; \
	  bash scripts/fuzz.sh --seconds $(FUZZ_TEST_SECONDS) || status=1; exit $$status

# The installer and manager images run in the CRI test bed (ZPImageTests): builds the images
# (scripts/images.sh, a release build the first time, cached by content) and runs them on
# containerd 1.6 and 2.x. Long, so not part of `make test`.
test-images: setup bpf-check
	$(SWIFT) build --build-tests $(SWIFT_FLAGS)
	$(SWIFT) test --skip-build --no-parallel $(SWIFT_FLAGS) --filter '^ZPImageTests\.'

# swift-format with the repository's .swift-format (swift-nio's settings, line length 120).
SWIFT_SOURCES = Sources Tests bench Fuzz
format:
	$(SWIFT) format format -i -r $(SWIFT_SOURCES)
lint:
	$(SWIFT) format lint -r $(SWIFT_SOURCES)

# Pure tests only (no root needed, no setup).
test-unit:
	$(SWIFT) test $(SWIFT_FLAGS) --filter '^(ZPCoreTests|ZPAPITests|ZPCLITests|ZPManagerTests|ZPScaleDownDriverTests)\.'

# libFuzzer targets for every hand-written decoder (scripts/fuzz.sh lists them), FUZZ_SECONDS each.
fuzz: setup
	@bash scripts/fuzz.sh --seconds $(FUZZ_SECONDS)

# The same targets for FUZZ_LONG_RUNS inputs each (10 million; about an hour and a half on 2 cores).
fuzz-long: setup
	@bash scripts/fuzz.sh --runs $(FUZZ_LONG_RUNS)

demo: setup
	@bash scripts/demo.sh

bench: setup
	@bash scripts/bench.sh

# Busybox pods scaled down at once (node memory, time to scale all down, one restore among them,
# 20 woken together); several minutes. Not part of `make bench`. 200 pods by default
# (BENCH_DENSITY_PODS=N); they share the node's one sockops program (decision 0052).
bench-density: setup
	@BENCH_WORKLOADS=none BENCH_DENSITY_PODS=$${BENCH_DENSITY_PODS:-200} BENCH_ARGS="--memory-pods 0 --shim-start-trials 0 $${BENCH_ARGS:-}" bash scripts/bench.sh

# The manager with N idle fake shims (status servers without containers) and a burst of N phase
# changes against the Kubernetes API double: RSS, CPU, time until every label converged.
MANAGER_SHIMS ?= 200
bench-manager:
	$(SWIFT) build -c release $(SWIFT_FLAGS) --product zeropod-manager
	$(SWIFT) build -c release $(SWIFT_FLAGS) --product zeropod-manager-bench
	$$($(SWIFT) build -c release $(SWIFT_FLAGS) --show-bin-path)/zeropod-manager-bench $(MANAGER_SHIMS)

# OCI image archives of the installer and the manager (release builds, Swift runtime linked in; umoci),
# cached by content under $ZP_CACHE/images (default /var/cache/zeropod-swift); nothing is pushed. Prints NAME REF ARCHIVE per image.
images: setup
	@bash scripts/images.sh

clean:
	rm -rf .build .build-fuzz .build-node
