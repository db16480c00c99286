#!/usr/bin/env bash
# Runs co_local's unit tests under Miri, the interpreter that checks unsafe
# code for undefined behaviour.
#
#   scripts/miri.sh [extra arguments for the test binary...]
#
# What it covers: everything in `co_local/src/` that the unit tests reach
# (`cargo +nightly miri test -p co_local --lib`): the layout builder
# (registry.rs), and all of storage/, the crate's unsafe core: making
# blocks (fresh and recycled from the per-thread pool), copying the
# constants' image, the current-block pointer and `swap_current`, the access
# path (fast and slow, lazy initialisation, re-entrant initialisers), and the
# destruction of blocks, also on panics and at thread exit. The unit tests
# feed a hand-made registry (`storage/tests.rs`) instead of the linker's
# list, so that Miri can run them. Miri checks out-of-bounds and unaligned
# accesses, use after free, uninitialised reads, aliasing (Stacked Borrows by
# default; a second run uses Tree Borrows), data races, leaks, and, with
# strict provenance, integer-to-pointer casts.
#
# What it cannot cover:
# - the registry built by `co_local!`: linkme's distributed slice is read
#   through linker-defined symbols (`__start_linkme_...`), which Miri does
#   not support; the macro's expansion is tested natively (tests/, ui-tests/);
# - co_runtime: `context` switches stacks with Boost.Context's assembly,
#   which Miri cannot run, so coroutines (and the block swaps around each
#   switch) are tested natively, and under valgrind (scripts/valgrind.sh);
# - the integration tests in tests/, which all use the linker's registry.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "Miri is not installed: rustup +nightly component add miri rust-src" >&2
  exit 2
fi

export CARGO_TERM_COLOR=never
flags="-Zmiri-strict-provenance ${MIRIFLAGS:-}"

echo "=== Miri, Stacked Borrows"
MIRIFLAGS="$flags" cargo +nightly miri test -p co_local --lib -- "$@"

echo "=== Miri, Tree Borrows"
MIRIFLAGS="$flags -Zmiri-tree-borrows" cargo +nightly miri test -p co_local --lib -- "$@"
