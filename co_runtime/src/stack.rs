//! Guarded coroutine stacks and the per-thread pool that reuses them.
//!
//! Every coroutine runs on a [`ProtectedFixedSizeStack`]: a private anonymous
//! mapping whose lowest page is made inaccessible, so a stack overflow faults
//! on that guard page instead of silently overwriting whatever lies below.
//!
//! Mapping a stack costs an `mmap` and an `mprotect`, and unmapping it a
//! `munmap`: system calls that would dominate the cost of a short coroutine.
//! So a finished coroutine hands its stack to a pool kept by its thread, and the
//! next coroutine of that size takes it from there. The pool is bounded
//! ([`STACK_POOL_CAPACITY`] stacks and [`STACK_POOL_MAX_BYTES`] bytes per
//! thread); when it is full, the least recently pooled stack is unmapped to
//! make room. The thread's pooled stacks are unmapped when it exits.
//!
//! This module has no `unsafe` code: the stacks are only handed to the
//! context wrapper in `raw.rs`.

use core::cell::RefCell;
use core::ops::Deref;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use context::stack::{ProtectedFixedSizeStack, Stack};

use crate::raw::{valgrind_stack_deregister, valgrind_stack_register};

/// The stack size of [`Coroutine::new`](crate::Coroutine::new): 256 KiB, not
/// counting the guard page.
///
/// Only the pages a coroutine touches take memory, so a larger stack costs
/// address space, not RAM. Use
/// [`Coroutine::with_stack_size`](crate::Coroutine::with_stack_size) for
/// deeper recursion.
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The most idle stacks a thread keeps for reuse.
pub const STACK_POOL_CAPACITY: usize = 32;

/// The most bytes of idle stacks a thread keeps for reuse (usable sizes, guard
/// pages not counted). A stack larger than this is unmapped when its coroutine
/// finishes.
pub const STACK_POOL_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Stacks mapped in the whole process now, in use or pooled.
static PROCESS_MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Counters of the stack pool, from [`stack_stats`].
///
/// `pooled`, `pooled_bytes`, `thread_maps` and `thread_unmaps` describe the
/// calling thread; `process_mapped` the whole process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StackStats {
    /// Idle stacks in this thread's pool, at most [`STACK_POOL_CAPACITY`].
    pub pooled: usize,
    /// Usable bytes of those stacks, at most [`STACK_POOL_MAX_BYTES`].
    pub pooled_bytes: usize,
    /// Stacks this thread has mapped so far, because its pool had none of the
    /// size asked for.
    pub thread_maps: u64,
    /// Stacks this thread has unmapped so far, because its pool was full or
    /// the stack was too large to keep.
    pub thread_unmaps: u64,
    /// Stacks mapped in the whole process now: in use by a coroutine or idle
    /// in some thread's pool.
    pub process_mapped: usize,
}

/// The counters of the stack pool: how many stacks this thread keeps idle, how
/// many it has mapped and unmapped, and how many are mapped in the process.
///
/// In steady state (coroutines of the same sizes made and finished over and
/// over), `thread_maps` stops growing: every new coroutine gets a stack that an
/// earlier one has finished with.
///
/// # Examples
///
/// ```
/// use co_runtime::{stack_stats, Coroutine, Yielder};
///
/// let run_one = || {
///     let mut co = Coroutine::new(|_: &Yielder<u32, ()>, x: u32| x + 1);
///     co.resume(1);
/// };
/// run_one();
/// let before = stack_stats();
/// for _ in 0..100 {
///     run_one();
/// }
/// let after = stack_stats();
/// assert_eq!(after.thread_maps, before.thread_maps);
/// assert_eq!(after.pooled, before.pooled);
/// ```
pub fn stack_stats() -> StackStats {
    let process_mapped = PROCESS_MAPPED.load(Ordering::Relaxed);
    POOL.try_with(|pool| {
        let pool = pool.borrow();
        StackStats {
            pooled: pool.stacks.len(),
            pooled_bytes: pool.bytes,
            thread_maps: pool.maps,
            thread_unmaps: pool.unmaps,
            process_mapped,
        }
    })
    .unwrap_or(StackStats {
        process_mapped,
        ..StackStats::default()
    })
}

/// A mapped guarded stack, counted in [`PROCESS_MAPPED`] until it is
/// unmapped, and registered with valgrind (when running under it) meanwhile.
struct Mapped(ProtectedFixedSizeStack, usize);

impl Mapped {
    /// Maps a stack of `size` usable bytes (a multiple of the page size).
    #[track_caller]
    fn map(size: usize) -> Mapped {
        let stack = match ProtectedFixedSizeStack::new(size) {
            Ok(stack) => stack,
            Err(err) => panic!("co_runtime: cannot map a coroutine stack of {size} bytes: {err}"),
        };
        debug_assert_eq!(stack.len(), size);
        PROCESS_MAPPED.fetch_add(1, Ordering::Relaxed);
        let valgrind_id = valgrind_stack_register(stack.bottom() as usize, stack.top() as usize);
        Mapped(stack, valgrind_id)
    }

    fn size(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // The `ProtectedFixedSizeStack` field unmaps the stack right after.
        valgrind_stack_deregister(self.1);
        PROCESS_MAPPED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One thread's idle stacks, least recently pooled first.
struct Pool {
    stacks: VecDeque<Mapped>,
    bytes: usize,
    maps: u64,
    unmaps: u64,
}

impl Pool {
    /// An idle stack of `size` bytes, most recently pooled first (its pages
    /// are the likeliest to be warm).
    fn take(&mut self, size: usize) -> Option<Mapped> {
        let index = self.stacks.iter().rposition(|s| s.size() == size)?;
        let stack = self.stacks.remove(index)?;
        self.bytes -= size;
        Some(stack)
    }

    /// Keeps `stack` for reuse, unmapping the oldest idle stacks if needed
    /// to stay within the bounds; a stack too large for the pool is unmapped.
    fn put(&mut self, stack: Mapped) {
        let size = stack.size();
        if size > STACK_POOL_MAX_BYTES {
            self.unmaps += 1;
            return;
        }
        while self.stacks.len() >= STACK_POOL_CAPACITY || self.bytes + size > STACK_POOL_MAX_BYTES {
            let Some(oldest) = self.stacks.pop_front() else {
                break;
            };
            self.bytes -= oldest.size();
            self.unmaps += 1;
        }
        self.bytes += size;
        self.stacks.push_back(stack);
    }
}

std::thread_local! {
    /// This thread's pool. Its destructor, at thread exit, unmaps the idle
    /// stacks; a stack released after that is unmapped at once.
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            stacks: VecDeque::new(),
            bytes: 0,
            maps: 0,
            unmaps: 0,
        })
    };
}

/// The usable size of the stack used for a request of `bytes`: rounded up to
/// whole pages, at least one.
#[track_caller]
fn rounded_size(bytes: usize) -> usize {
    // `context` never maps less than its minimum, which is one page.
    let page = Stack::min_size();
    match bytes.max(1).checked_next_multiple_of(page) {
        Some(size) => size,
        None => panic!("co_runtime: a stack of {bytes} bytes is too large"),
    }
}

/// A coroutine's stack: taken from this thread's pool (or mapped) when the
/// coroutine is made, given back when it is dropped.
pub(crate) struct PooledStack {
    /// Always `Some`, except inside `drop`.
    stack: Option<Mapped>,
}

impl PooledStack {
    /// A stack of at least `bytes` usable bytes (rounded up to whole pages)
    /// with a guard page below it.
    ///
    /// # Panics
    ///
    /// Panics if a new stack cannot be mapped (the size exceeds the system's
    /// limit, or the address space is exhausted).
    #[track_caller]
    pub(crate) fn new(bytes: usize) -> PooledStack {
        let size = rounded_size(bytes);
        let pooled = POOL
            .try_with(|pool| {
                let mut pool = pool.borrow_mut();
                let stack = pool.take(size);
                if stack.is_none() {
                    pool.maps += 1;
                }
                stack
            })
            .ok()
            .flatten();
        // A `match`, not `unwrap_or_else`: a closure would lose the caller's
        // location for `map`'s panic.
        let stack = match pooled {
            Some(stack) => stack,
            None => Mapped::map(size),
        };
        PooledStack { stack: Some(stack) }
    }
}

impl Deref for PooledStack {
    type Target = Stack;

    fn deref(&self) -> &Stack {
        match &self.stack {
            Some(mapped) => &mapped.0,
            None => unreachable!("a pooled stack is only empty while it is dropped"),
        }
    }
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        if let Some(stack) = self.stack.take() {
            // If the pool is gone (thread exit), `stack` is unmapped here.
            let _ = POOL.try_with(|pool| pool.borrow_mut().put(stack));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a new thread, so that it starts with an empty pool.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

    #[test]
    fn sizes_are_rounded_to_pages() {
        let page = Stack::min_size();
        assert_eq!(rounded_size(0), page);
        assert_eq!(rounded_size(1), page);
        assert_eq!(rounded_size(page), page);
        assert_eq!(rounded_size(page + 1), 2 * page);
        assert_eq!(rounded_size(DEFAULT_STACK_SIZE), DEFAULT_STACK_SIZE);
        let stack = PooledStack::new(page + 1);
        assert_eq!(stack.len(), 2 * page);
    }

    #[test]
    #[should_panic = "too large"]
    fn an_impossible_size_panics() {
        rounded_size(usize::MAX);
    }

    #[test]
    fn a_released_stack_is_reused() {
        on_fresh_thread(|| {
            let first = PooledStack::new(DEFAULT_STACK_SIZE);
            let bottom = first.bottom();
            assert_eq!(stack_stats().thread_maps, 1);
            drop(first);
            assert_eq!(stack_stats().pooled, 1);
            let second = PooledStack::new(DEFAULT_STACK_SIZE);
            assert_eq!(second.bottom(), bottom);
            let stats = stack_stats();
            assert_eq!((stats.thread_maps, stats.pooled), (1, 0));
        });
    }

    #[test]
    fn stacks_of_another_size_are_not_reused() {
        on_fresh_thread(|| {
            let page = Stack::min_size();
            drop(PooledStack::new(16 * page));
            let other = PooledStack::new(32 * page);
            assert_eq!(other.len(), 32 * page);
            let stats = stack_stats();
            assert_eq!((stats.thread_maps, stats.pooled), (2, 1));
        });
    }

    #[test]
    fn the_pool_is_bounded_in_count() {
        on_fresh_thread(|| {
            let stacks: Vec<_> = (0..STACK_POOL_CAPACITY + 10)
                .map(|_| PooledStack::new(DEFAULT_STACK_SIZE))
                .collect();
            drop(stacks);
            let stats = stack_stats();
            assert_eq!(stats.pooled, STACK_POOL_CAPACITY);
            assert_eq!(stats.pooled_bytes, STACK_POOL_CAPACITY * DEFAULT_STACK_SIZE);
            assert_eq!(stats.thread_maps, STACK_POOL_CAPACITY as u64 + 10);
            assert_eq!(stats.thread_unmaps, 10);
        });
    }

    #[test]
    fn the_pool_is_bounded_in_bytes() {
        on_fresh_thread(|| {
            let big = STACK_POOL_MAX_BYTES / 4;
            let stacks: Vec<_> = (0..6).map(|_| PooledStack::new(big)).collect();
            drop(stacks);
            let stats = stack_stats();
            assert_eq!((stats.pooled, stats.thread_unmaps), (4, 2));
            assert_eq!(stats.pooled_bytes, STACK_POOL_MAX_BYTES);

            // Too large to keep at all: the pool is left as it was.
            drop(PooledStack::new(STACK_POOL_MAX_BYTES + 1));
            let after = stack_stats();
            assert_eq!(after.thread_maps, stats.thread_maps + 1);
            assert_eq!(after.thread_unmaps, stats.thread_unmaps + 1);
            assert_eq!(after.pooled_bytes, STACK_POOL_MAX_BYTES);
        });
    }

    #[test]
    fn the_oldest_idle_stack_makes_room() {
        on_fresh_thread(|| {
            let page = Stack::min_size();
            let old: Vec<_> = (0..STACK_POOL_CAPACITY)
                .map(|_| PooledStack::new(8 * page))
                .collect();
            let oldest = old[0].bottom();
            drop(old);
            // A stack of a new size evicts the oldest idle one...
            drop(PooledStack::new(12 * page));
            let stats = stack_stats();
            assert_eq!(stats.thread_unmaps, 1);
            assert_eq!(
                stats.pooled_bytes,
                (STACK_POOL_CAPACITY - 1) * 8 * page + 12 * page
            );
            // ...and is then reused without mapping.
            for _ in 0..10 {
                drop(PooledStack::new(12 * page));
            }
            assert_eq!(stack_stats().thread_maps, stats.thread_maps);
            // The other survivors are all still there, the evicted one is not.
            let rest: Vec<_> = (0..STACK_POOL_CAPACITY - 1)
                .map(|_| PooledStack::new(8 * page))
                .collect();
            assert_eq!(stack_stats().thread_maps, stats.thread_maps);
            assert!(rest.iter().all(|s| s.bottom() != oldest));
        });
    }
}
