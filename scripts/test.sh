#!/usr/bin/env bash
# Runs every test target, each in its own `swift test` process (after `swift build --build-tests`).
#
# Why not one process: the end-to-end suites (ZPShimTests) drive containerd, runc and curl with
# blocking waits, which occupy Swift's cooperative thread pool (as wide as the machine: 2 threads
# here) and starved the NIO-based transport tests running beside them in the same process (ttrpc
# calls "did not answer within 10 s"). One process per target keeps them apart; ZPShimTests and
# ZPCRITests and ZPImageTests (the CRI test bed's end-to-end suites) run without parallelism for the
# same reason.
# ZPImageTests (the installer and manager images in the CRI test bed) need release builds of the
# images (scripts/images.sh: 10-60 minutes cold on 2 cores), so they are `make test-images`, not part
# of `make test`; ZP_IMAGE_TESTS=1 adds them here.
# SWIFT_FLAGS is passed through.
set -uo pipefail
cd "$(dirname "$0")/.."
swift_flags=(${SWIFT_FLAGS:-})
serial_targets=(ZPShimTests ZPCRITests)
own_targets=(ZPImageTests)  # run by `make test-images`
[ "${ZP_IMAGE_TESTS:-0}" = 1 ] && { serial_targets+=(ZPImageTests); own_targets=(); }
parallel_targets=()
for dir in Tests/*/; do  # every test target, so a new one is never skipped
  t=$(basename "$dir")
  [[ " ${serial_targets[*]} ${own_targets[*]} " == *" $t "* ]] || parallel_targets+=("$t")
done
[ ${#own_targets[@]} -gt 0 ] && echo "test.sh: not run here: ${own_targets[*]} (make test-images)"
failed=()
# Each target's output also goes to a log, so the end of the run can repeat what failed: CI shows
# only the tail of the output, and a failed target's reason would otherwise be hundreds of lines up.
log_dir=.build/test-logs
mkdir -p "$log_dir"
run() {
  local target=$1; shift
  printf '\n=== %s ===\n' "$target"
  swift test --skip-build "${swift_flags[@]}" "$@" --filter "^$target\\." 2>&1 | tee "$log_dir/$target.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("$target")
}
# The failing tests' lines of a target's log: swift-testing's ✘ lines and recorded issues (with the
# lines that follow them), XCTest's "error:" lines; at most 60 lines a target.
failures_of() {
  grep -a -A3 -E '(✘|recorded an issue|: error: |Fatal error|signal code)' "$log_dir/$1.log" | head -60
}
for t in "${parallel_targets[@]}"; do run "$t"; done
for t in "${serial_targets[@]}"; do run "$t" --no-parallel; done
printf '\n'
if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    printf 'test.sh: what failed in %s (full log %s/%s.log):\n' "$t" "$log_dir" "$t"
    failures_of "$t"
    printf '\n'
  done
  echo "test.sh: failed targets: ${failed[*]}"
  exit 1
fi
echo "test.sh: all ${#parallel_targets[@]}+${#serial_targets[@]} test targets passed"
