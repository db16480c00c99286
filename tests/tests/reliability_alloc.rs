//! Allocation balance, process-wide: every allocation made by coroutine
//! lifecycles, however they end, and by threads that exit holding suspended
//! coroutines, is freed, apart from what is made once per process (the
//! registry's layout) and the bounded per-thread pools (co_local's clean
//! blocks, co_runtime's stacks).
//!
//! The counting allocator is process-wide, so this binary holds one test:
//! nothing else runs while it measures. `runtime_alloc.rs` counts per thread
//! (one thread's churn, switches, endings); this one also sees what threads
//! free when they exit, and mixes many more ways of ending: nested
//! coroutines, entered `Locals`, held references, panicking initialisers and
//! destructors, initialisers that suspend.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::hint::black_box;
use std::panic;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use co_local::{co_local, Locals};
use co_local_tests::catch;
use co_runtime::{stack_stats, Coroutine, CoroutineResult, Yielder};

/// Counts live allocations and bytes in the whole process.
struct Counting;

static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn counted(allocs: i64, bytes: i64) {
    LIVE_ALLOCS.fetch_add(allocs, Ordering::Relaxed);
    LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    if allocs > 0 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the same arguments; the
// counting only touches atomics, which neither allocate nor panic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            counted(1, layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            counted(1, layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        counted(-1, -(layout.size() as i64));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            counted(0, new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live allocations and live bytes of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    allocs: i64,
    bytes: i64,
}

fn live() -> Live {
    Live {
        allocs: LIVE_ALLOCS.load(Ordering::Relaxed),
        bytes: LIVE_BYTES.load(Ordering::Relaxed),
    }
}

/// The payload of every panic the lifecycles make on purpose; it owns heap
/// memory, which must be freed too.
struct Expected(#[allow(dead_code)] String);

fn expected(what: &str) -> ! {
    panic::panic_any(Expected(what.to_owned()))
}

/// Keeps the hook quiet about `Expected` panics (and about the ones it
/// reports for a destructor's panic dropped by co_runtime), so that they
/// print nothing and allocate nothing.
fn quiet_expected_panics() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if !info.payload().is::<Expected>() {
            default(info);
        }
    }));
}

/// A value that owns heap memory and may panic when dropped.
struct Heap {
    data: Vec<u64>,
    panics: bool,
}

impl Heap {
    fn new(n: u64) -> Heap {
        Heap {
            data: (0..n).collect(),
            panics: false,
        }
    }

    fn bomb() -> Heap {
        let mut heap = Heap::new(4);
        heap.panics = true;
        heap
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        black_box(&self.data);
        if self.panics {
            expected("a destructor");
        }
    }
}

co_local! {
    static NAME: RefCell<String> = RefCell::new(String::from("a lazy value on the heap"));
    static LIST: RefCell<Vec<String>> = RefCell::new(vec![String::from("one")]);
    static SLOT: RefCell<Option<Heap>> = const { RefCell::new(None) };
    static FAILING: RefCell<Heap> = {
        let _partial = Heap::new(8);
        expected("an initialiser")
    };
    static SLOW: RefCell<Heap> = slow_init();
    static CHILD: RefCell<Option<Coroutine<(), (), ()>>> = const { RefCell::new(None) };
    /// Copied into every coroutine made where it is alive.
    #[inherit]
    static TRACE: RefCell<Vec<String>> = RefCell::new(Vec::new());
}

scoped_tls::scoped_thread_local! {
    /// The yielder of the coroutine whose `SLOW` initialiser suspends it. Set
    /// by one coroutine at a time, around one access.
    static YIELDER: Yielder<(), ()>
}

fn slow_init() -> RefCell<Heap> {
    let partial = Heap::new(16);
    YIELDER.with(|y| y.suspend(()));
    RefCell::new(partial)
}

type Co = Coroutine<(), (), Box<[u8]>>;

/// Makes lazy values with heap data in the current block.
fn make_values(n: u64) {
    NAME.with_borrow_mut(|name| name.push_str(" and more"));
    LIST.with_borrow_mut(|list| list.extend((0..n).map(|i| i.to_string())));
    SLOT.set(Some(Heap::new(n)));
}

/// A coroutine that makes values, suspends inside an entered `Locals` with
/// values of its own while it holds a reference from `with` and a nested
/// suspended coroutine, then returns.
fn deep(n: u64) -> Co {
    Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        make_values(n);
        let _on_stack = Heap::new(n);
        let mut nested = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            make_values(n);
            y.suspend(());
        });
        nested.resume(());
        let mut other = Locals::new();
        other.enter(|| {
            make_values(n);
            NAME.with(|name| {
                y.suspend(());
                black_box(name);
            });
        });
        vec![1; 64].into_boxed_slice()
    })
}

/// One coroutine lifecycle of kind `kind % KINDS`.
fn lifecycle(kind: u64) {
    let n = kind % 7 + 1;
    match kind % KINDS {
        // Returns, after two suspensions.
        0 => {
            let mut co = deep(n);
            assert_eq!(co.resume(()), CoroutineResult::Yield(()));
            assert!(co.resume(()).as_return().is_some());
        }
        // Panics.
        1 => {
            let mut co = Co::new(move |_, ()| {
                make_values(n);
                let _on_stack = Heap::new(n);
                expected("a coroutine")
            });
            assert!(catch(|| co.resume(())).is_err());
        }
        // Dropped suspended, deep inside.
        2 => {
            let mut co = deep(n);
            co.resume(());
            drop(co);
        }
        // Dropped before it starts, seeded.
        3 => {
            let captured = Heap::new(n);
            let mut co = Co::new(move |_, ()| {
                black_box(&captured);
                unreachable!()
            });
            co.with_locals(|| make_values(n));
            drop(co);
        }
        // Dropped while suspended inside a lazy initialiser.
        4 => {
            let mut co = Co::new(move |y, ()| {
                make_values(n);
                YIELDER.set(y, || SLOW.with_borrow(|slow| black_box(slow.data.len())));
                unreachable!()
            });
            co.resume(());
            drop(co);
        }
        // A destructor of a co_local value panics when it returns.
        5 => {
            let mut co = Co::new(move |_, ()| {
                make_values(n);
                SLOT.set(Some(Heap::bomb()));
                vec![5; 16].into_boxed_slice()
            });
            assert!(catch(|| co.resume(())).is_err());
            assert!(co.done());
        }
        // A lazy initialiser panics; the coroutine catches it and returns.
        6 => {
            let mut co = Co::new(move |_, ()| {
                make_values(n);
                assert!(catch(|| FAILING.with_borrow(|f| f.data.len())).is_err());
                vec![6; 16].into_boxed_slice()
            });
            assert!(co.resume(()).as_return().is_some());
        }
        // A suspended coroutine kept in the block of one that returns.
        7 => {
            let mut co = Co::new(move |_, ()| {
                let mut child = deep(n);
                child.resume(());
                CHILD.set(Some(Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                    make_values(n);
                    y.suspend(());
                    drop(child);
                })));
                CHILD.with_borrow_mut(|c| c.as_mut().unwrap().resume(()));
                vec![7; 16].into_boxed_slice()
            });
            assert!(co.resume(()).as_return().is_some());
        }
        // Panics inside an entered `Locals`, with a nested coroutine left
        // suspended on its stack.
        8 => {
            let mut co = Co::new(move |_, ()| {
                let mut other = Locals::new();
                other.enter(|| {
                    make_values(n);
                    let mut nested = deep(n);
                    nested.resume(());
                    expected("inside a Locals")
                })
            });
            assert!(catch(|| co.resume(())).is_err());
        }
        // Inherits a value with heap data from the block it is made in,
        // three levels deep, and changes its copies.
        9 => {
            let mut outer = Locals::new();
            outer.enter(|| {
                TRACE.with_borrow_mut(|t| t.push(format!("request {n}")));
                let mut co = Co::new(move |_, ()| {
                    TRACE.with_borrow_mut(|t| t.push(String::from("child")));
                    let mut inner = Co::new(|_, ()| {
                        TRACE.with_borrow_mut(|t| t.push(String::from("grandchild")));
                        vec![0; TRACE.with_borrow(Vec::len)].into_boxed_slice()
                    });
                    inner.resume(()).as_return().unwrap()
                });
                assert_eq!(co.resume(()).as_return().map(|b| b.len()), Some(3));
            });
        }
        // A destructor of a co_local value panics when it is dropped
        // suspended.
        _ => {
            let mut co = deep(n);
            co.resume(());
            co.with_locals(|| SLOT.set(Some(Heap::bomb())));
            assert!(catch(move || drop(co)).is_err());
        }
    }
}

const KINDS: u64 = 11;
const LIFECYCLES: u64 = 100_000;

fn lifecycles(count: u64) {
    for kind in 0..count {
        lifecycle(kind);
    }
}

std::thread_local! {
    static HELD: RefCell<Vec<Co>> = const { RefCell::new(Vec::new()) };
}

/// Suspended coroutines, for a thread to hold when it exits.
fn suspended(count: u64) -> Vec<Co> {
    (0..count)
        .map(|n| {
            let mut co = deep(n + 1);
            co.resume(());
            co
        })
        .collect()
}

/// A thread that runs lifecycles and exits holding suspended coroutines,
/// in a way that depends on `how`.
fn exiting_thread(how: u64) {
    if how == 0 {
        // Made before co_local's and co_runtime's thread-locals, so that it
        // can be destroyed after them.
        HELD.with_borrow(|held| black_box(held.len()));
    }
    lifecycles(1_000);
    match how {
        0 | 1 => HELD.with_borrow_mut(|held| held.extend(suspended(5))),
        2 => {
            let mut co = suspended(1).pop().unwrap();
            CHILD.set(Some(Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                co.resume(());
                y.suspend(());
            })));
            CHILD.with_borrow_mut(|c| c.as_mut().unwrap().resume(()));
        }
        _ => {
            let _on_stack = suspended(5);
            expected("a thread")
        }
    }
}

/// The ways of `exiting_thread` whose coroutines are unwound and freed at
/// thread exit. The others hold them in thread-locals first used before the
/// thread's first coroutine: co_runtime leaks those rather than unwind them
/// while thread-locals are being destroyed (see
/// `threads_exiting_with_coroutines_in_older_thread_locals_leak_them`).
const UNWOUND_AT_EXIT: [u64; 2] = [1, 3];

#[test]
fn lifecycles_and_exiting_threads_free_every_allocation() {
    quiet_expected_panics();
    let cold = live();

    // Warm up: the layout, this thread's own block and pools, the panic
    // machinery, a first thread.
    NAME.with_borrow(|name| black_box(name.len()));
    lifecycles(10 * KINDS);
    std::thread::spawn(|| lifecycles(KINDS)).join().unwrap();

    let warm = live();
    let allocs = ALLOCS.load(Ordering::Relaxed);
    lifecycles(LIFECYCLES);
    // 100,000 more inherited creations (two per lifecycle of kind 9).
    for _ in 0..50_000 {
        lifecycle(9);
    }
    let after = live();
    let per_lifecycle = (ALLOCS.load(Ordering::Relaxed) - allocs) / LIFECYCLES;

    // Threads that exit holding suspended coroutines, in a thread-local
    // made first or last, in their own co_local block, or on their stack
    // while they panic: what they made is freed when they have exited, and
    // their stacks are unmapped.
    let mapped = stack_stats().process_mapped;
    let before_threads = live();
    // An array, not a `Vec`: allocating the results would count.
    let mut rounds = [(before_threads, mapped); 3];
    for round in &mut rounds {
        let threads: Vec<_> = UNWOUND_AT_EXIT
            .iter()
            .map(|&how| (how, std::thread::spawn(move || exiting_thread(how))))
            .collect();
        for (how, thread) in threads {
            assert_eq!(thread.join().is_err(), how == 3, "thread {how}");
        }
        *round = (live(), stack_stats().process_mapped);
    }

    // Printed only now: libtest's capture of the output is a buffer that
    // grows as it is written.
    eprintln!(
        "reliability_alloc: {LIFECYCLES} lifecycles, about {per_lifecycle} allocations each: \
         live {warm:?} before, {after:?} after (cold {cold:?}); block size {} bytes; \
         threads: live {before_threads:?} before, {rounds:?} after each round",
        co_local::block_size()
    );
    assert_eq!(after, warm, "the lifecycles leaked");
    // What is kept since the cold start: the layout, this thread's own
    // block, and the pools, all bounded.
    let block = co_local::block_size() as i64;
    let pooled_blocks = (256 * 1024 / block).clamp(1, 64);
    let kept = after.bytes - cold.bytes;
    assert!(
        kept <= (pooled_blocks + 1) * block + 16 * 1024,
        "{kept} bytes kept since the cold start"
    );
    for (round, &(after, mapped_after)) in rounds.iter().enumerate() {
        assert_eq!(after, before_threads, "the threads of round {round} leaked");
        assert_eq!(mapped_after, mapped, "stacks left mapped in round {round}");
    }
}
