//! Resources of co_runtime, counted: allocations with a counting global
//! allocator (per thread, so that tests running in parallel do not disturb
//! each other), and mapped stacks with `stack_stats`. This binary has its
//! own allocator, so it is a test file of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

use co_local::co_local;
use co_runtime::{stack_stats, Coroutine, CoroutineResult, Yielder, STACK_POOL_CAPACITY};

/// Counts this thread's allocations and live bytes.
struct Counting;

std::thread_local! {
    // `const` and without destructor: usable from the allocator at any time.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

fn count(allocs: u64, bytes: i64) {
    let _ = ALLOCS.try_with(|a| a.set(a.get() + allocs));
    let _ = LIVE_BYTES.try_with(|b| b.set(b.get() + bytes));
}

// SAFETY: every method forwards to `System` with the same arguments; the
// counting only touches thread-locals that never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as i64);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(1, layout.size() as i64);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(0, -(layout.size() as i64));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(1, new_size as i64 - layout.size() as i64);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// `(allocations so far, live bytes)` of this thread.
fn snapshot() -> (u64, i64) {
    (ALLOCS.with(Cell::get), LIVE_BYTES.with(Cell::get))
}

/// Runs `f` on a thread of its own, and one at a time: the process-wide
/// count of mapped stacks then only changes through `f`, since a thread's
/// pooled stacks are unmapped before `join` returns.
fn isolated(f: impl FnOnce() + Send + 'static) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let result = std::thread::spawn(f).join();
    if let Err(payload) = result {
        panic::resume_unwind(payload);
    }
}

co_local! {
    static COUNTER: Cell<u64> = const { Cell::new(0) };
    static NAME: RefCell<String> = RefCell::new(String::from("a lazy value on the heap"));
}

const CHURN: u64 = 100_000;

fn run_one(i: u64) {
    let mut co = Coroutine::new(|y: &Yielder<u64, u64>, first: u64| {
        COUNTER.set(first);
        let second = y.suspend(COUNTER.get() + 1);
        first + second
    });
    assert_eq!(co.resume(i), CoroutineResult::Yield(i + 1));
    assert_eq!(co.resume(1), CoroutineResult::Return(i + 1));
}

#[test]
fn create_run_drop_churn_allocates_only_the_block_and_leaks_nothing() {
    isolated(create_run_drop_churn);
}

fn create_run_drop_churn() {
    // Warm up: the layout, this thread's own block (made first, so that it
    // does not take a block co_local may keep for reuse), the stack pool.
    COUNTER.set(0);
    run_one(0);

    let (allocs0, live0) = snapshot();
    run_one(1);
    let (allocs1, live1) = snapshot();
    let per_coroutine = allocs1 - allocs0;
    assert_eq!(live1, live0, "one coroutine leaked");
    // Its co_local block, if co_local does not reuse blocks; nothing else.
    assert!(
        per_coroutine <= 1,
        "a coroutine should allocate its co_local block only, got {per_coroutine} allocations"
    );

    let stacks = stack_stats();
    let process_mapped = stacks.process_mapped;
    for i in 0..CHURN {
        run_one(i);
    }
    let (allocs2, live2) = snapshot();
    assert_eq!(live2, live0, "the churn leaked");
    assert_eq!(allocs2 - allocs1, CHURN * per_coroutine);
    let after = stack_stats();
    assert_eq!(after.thread_maps, stacks.thread_maps, "no stack was mapped");
    assert_eq!(after.thread_unmaps, stacks.thread_unmaps);
    assert_eq!(after.pooled, stacks.pooled);
    assert_eq!(after.process_mapped, process_mapped);
}

#[test]
fn switching_allocates_nothing() {
    isolated(switching);
}

fn switching() {
    let mut co = Coroutine::new(|y: &Yielder<u64, u64>, mut x: u64| loop {
        COUNTER.set(COUNTER.get() + x);
        x = y.suspend(COUNTER.get());
    });
    co.resume(0);
    let before = snapshot();
    let mut total = 0;
    for i in 1..=10_000 {
        total += i;
        assert_eq!(co.resume(i), CoroutineResult::Yield(total));
    }
    assert_eq!(snapshot(), before);
}

#[test]
fn every_ending_leaks_nothing() {
    isolated(every_ending);
}

fn every_ending() {
    let make = || {
        Coroutine::new(|y: &Yielder<u32, ()>, how: u32| {
            // A lazy value that owns heap memory, and a heap value on the stack.
            NAME.with_borrow_mut(|name| name.push_str(" (changed)"));
            let _on_stack = Box::new([1_u8; 100]);
            match how {
                0 => {}
                1 => panic::resume_unwind(Box::new(String::from("boom"))),
                _ => {
                    y.suspend(());
                }
            }
        })
    };
    let one_round = || {
        let mut returns = make();
        returns.resume(0);
        let mut panics = make();
        assert!(panic::catch_unwind(AssertUnwindSafe(|| panics.resume(1))).is_err());
        let mut suspended = make();
        suspended.resume(2);
        drop(suspended);
        let mut seeded = make();
        seeded.with_locals(|| NAME.with_borrow(|name| name.len()));
        drop(seeded);
        drop(make());
    };
    one_round();
    let stacks = stack_stats();
    let (_, live) = snapshot();
    for _ in 0..2_000 {
        one_round();
    }
    assert_eq!(snapshot().1, live, "a coroutine ending leaked memory");
    let after = stack_stats();
    assert_eq!(after.thread_maps, stacks.thread_maps);
    assert!(after.pooled <= STACK_POOL_CAPACITY);
}

#[test]
fn idle_stacks_are_unmapped_at_thread_exit() {
    isolated(idle_stacks_at_thread_exit);
}

fn idle_stacks_at_thread_exit() {
    let before = stack_stats().process_mapped;
    let during = std::thread::spawn(|| {
        let many: Vec<_> = (0..10)
            .map(|_| {
                let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| y.suspend(()));
                co.resume(());
                co
            })
            .collect();
        let mapped = stack_stats().process_mapped;
        drop(many);
        assert_eq!(stack_stats().pooled, 10);
        mapped
    })
    .join()
    .unwrap();
    assert!(during >= before + 10);
    assert_eq!(stack_stats().process_mapped, before);
}
