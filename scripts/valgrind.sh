#!/usr/bin/env bash
# Runs every test binary of the workspace under valgrind's memcheck.
#
#   scripts/valgrind.sh [extra valgrind options...]
#
# Builds the test binaries (`cargo test --workspace --all-features --no-run`; doc tests are
# not binaries and are not run), then runs each one under
#
#   valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
#            --errors-for-leak-kinds=definite
#
# with `--test-threads=1`, prints valgrind's ERROR SUMMARY line for each, and
# exits non-zero if any binary has memcheck errors or definite leaks, or
# fails its tests. Each binary's full valgrind report is kept in
# target/valgrind/<binary>.log, its own output in target/valgrind/<binary>.out.
#
# Skipped: ui-tests' trybuild driver (`compiletest`), which only runs rustc.
#
# Heap errors only, for `soundness_generator` and `soundness_abandoned`:
# their generator coroutines switch stacks that generator does not register
# with valgrind, so memcheck reports every access of generator's own stack
# switches as an error. For these two a binary fails if its tests fail or if
# a report names a heap block (freed memory read or written, a block
# overrun: "free'd" / "alloc'd" in the report), not on the error count.
#
# Under valgrind the randomised model test (reliability_model) runs
# PROPTEST_CASES=20 scripts per test instead of its full count, unless
# PROPTEST_CASES is set. Tests that start a child process (the guard page,
# aborting scenarios) run that child natively: valgrind does not follow
# children (no --trace-children).
#
# Coroutine stacks are switched by `context`'s assembly; co_runtime registers
# each stack with VALGRIND_STACK_REGISTER, so memcheck knows them. No
# suppression file is used.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  echo "valgrind is not installed (apt-get install valgrind)" >&2
  exit 2
fi

export CARGO_TERM_COLOR=never
export PROPTEST_CASES="${PROPTEST_CASES:-20}"
# Symbolising backtraces under valgrind is slow and adds nothing here.
export RUST_BACKTRACE=0
# Proc-macro crates' test binaries link the toolchain's libstd dynamically;
# `cargo test` finds it for them, valgrind needs to be told.
libdir=$(rustc --print target-libdir)
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

out=target/valgrind
mkdir -p "$out"

echo "=== building the test binaries"
# One JSON message per artifact; keep test executables with their target name.
mapfile -t artifacts < <(
  cargo test --workspace --all-features --no-run --message-format=json |
    grep '"reason":"compiler-artifact"' |
    grep -E '"profile":\{[^}]*"test":true' |
    grep -v '"executable":null' |
    sed -E 's/.*"target":\{[^}]*"name":"([^"]*)".*"executable":"([^"]*)".*/\1 \2/'
)

failed=()
for artifact in "${artifacts[@]}"; do
  name=${artifact%% *}
  exe=${artifact#* }
  if [ "$name" = compiletest ]; then
    echo "--- $name: skipped (trybuild driver)"
    continue
  fi
  log="$out/$name.log"
  status=0
  # generator's binaries: heap errors only (its stack switches are unknown
  # to valgrind, which then reports its own switches); the others: every
  # error, and definite leaks.
  heap_only=false
  if [ "$name" = soundness_generator ] || [ "$name" = soundness_abandoned ]; then
    heap_only=true
    opts=()
    errors="free'd|alloc'd"
    shown=(-m 20 -B 12)
  else
    opts=(--error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite)
    errors="^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|[0-9,]+ bytes in [0-9,]+ blocks are definitely)"
    shown=(-m 40 -A 12)
  fi
  valgrind --tool=memcheck "${opts[@]}" --log-file="$log" "$@" \
    "$exe" --test-threads=1 >"$out/$name.out" 2>&1 || status=$?
  tests=$(grep -h "^test result" "$out/$name.out" | tail -n 1 || true)
  if $heap_only; then
    if [ "$status" -eq 0 ] && grep -q -E "$errors" "$log"; then
      status=1
    fi
    heap=$(grep -c -E "$errors" "$log" || true)
    echo "--- $name: heap errors only (generator's stacks are unknown to valgrind): $heap reports naming a heap block; ${tests:-no test result} (exit $status)"
  else
    summary=$(grep -h "ERROR SUMMARY" "$log" | head -n 1 | sed -E 's/^==[0-9]+== //')
    switching=$(grep -c "client switching stacks" "$log" || true)
    echo "--- $name: ${summary:-no ERROR SUMMARY (see $log)}; ${tests:-no test result} (exit $status; $switching stack-switch warnings)"
  fi
  if [ "$status" -ne 0 ]; then
    failed+=("$name")
    # The first errors valgrind reported, and the end of the binary's output.
    grep -h "${shown[@]}" -E "$errors" "$log" || true
    tail -n 20 "$out/$name.out"
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "=== valgrind: ${#failed[@]} binaries failed: ${failed[*]}"
  exit 1
fi
echo "=== valgrind: every test binary is clean"
