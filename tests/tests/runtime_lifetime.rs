//! A coroutine's co_local values are destroyed exactly once however it ends
//! (returns, panics, is dropped suspended, is dropped before it starts), with
//! the coroutine's block current while their destructors run, and never made
//! if they were never reached.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

use co_local::co_local;
use co_runtime::{Coroutine, CoroutineResult, Yielder};

/// Records its destruction: `(tag, ID current at the time)`.
struct Tracked {
    tag: Cell<u32>,
}

impl Tracked {
    const fn new(tag: u32) -> Tracked {
        Tracked {
            tag: Cell::new(tag),
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let current = ID.get();
        // The thread's own block is destroyed at thread exit, maybe after
        // `DROPS`: then there is nothing to record.
        let _ = DROPS.try_with(|drops| drops.borrow_mut().push((self.tag.get(), current)));
    }
}

co_local! {
    /// Which coroutine this is; a constant without destructor, so it stays
    /// readable while the block's other values are destroyed.
    static ID: Cell<u32> = const { Cell::new(0) };
    /// A lazy value with a destructor, tagged with the coroutine's id.
    static LAZY: Tracked = Tracked::new(ID.get());
    /// A constant with a destructor; its tag is set by the coroutine.
    static CONST: Tracked = const { Tracked::new(0) };
    /// A lazy value never touched by some coroutines.
    static UNTOUCHED: RefCell<Vec<Tracked>> = RefCell::new(vec![Tracked::new(1_000_000)]);
}

std::thread_local! {
    /// The destructions seen on this thread (each test has its own thread).
    static DROPS: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

fn take_drops() -> Vec<(u32, u32)> {
    let mut drops = DROPS.with_borrow_mut(std::mem::take);
    drops.sort_unstable();
    drops
}

/// Makes `LAZY` and tags `CONST` in the current block, for coroutine `id`.
fn touch(id: u32) {
    ID.set(id);
    LAZY.with(|lazy| assert_eq!(lazy.tag.get(), id));
    CONST.with(|c| c.tag.set(id));
}

#[test]
fn values_are_destroyed_when_the_coroutine_returns() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        touch(1);
        y.suspend(());
    });
    co.resume(());
    assert_eq!(take_drops(), []);
    assert_eq!(co.resume(()), CoroutineResult::Return(()));
    // Already destroyed when `resume` returns, each once, with ID 1 current.
    assert_eq!(take_drops(), [(1, 1), (1, 1)]);
    drop(co);
    assert_eq!(take_drops(), []);
}

#[test]
fn values_are_destroyed_when_the_coroutine_panics() {
    let mut co = Coroutine::<(), (), ()>::new(|_, ()| {
        touch(2);
        panic::resume_unwind(Box::new("boom"));
    });
    assert!(panic::catch_unwind(AssertUnwindSafe(|| co.resume(()))).is_err());
    assert_eq!(take_drops(), [(2, 2), (2, 2)]);
    drop(co);
    assert_eq!(take_drops(), []);
}

#[test]
fn values_are_destroyed_after_the_stack_when_dropped_suspended() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        touch(3);
        // A reference into the block is held across the suspension: the
        // block must outlive the unwinding of this frame.
        LAZY.with(|lazy| {
            let _on_stack = Tracked::new(30);
            y.suspend(());
            unreachable!("{}", lazy.tag.get());
        });
    });
    co.resume(());
    drop(co);
    // The value on the stack first (unwinding), then the block's values.
    let drops = DROPS.with_borrow_mut(std::mem::take);
    assert_eq!(drops[0], (30, 3));
    assert_eq!(take_drops_of(drops), [(3, 3), (3, 3), (30, 3)]);
}

fn take_drops_of(mut drops: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    drops.sort_unstable();
    drops
}

#[test]
fn values_are_destroyed_when_dropped_before_the_start() {
    let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| unreachable!());
    co.with_locals(|| touch(4));
    assert_eq!(take_drops(), []);
    drop(co);
    assert_eq!(take_drops(), [(4, 4), (4, 4)]);
}

#[test]
fn untouched_lazy_values_are_never_made() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        ID.set(5);
        y.suspend(());
    });
    co.resume(());
    drop(co);
    // Nothing is destroyed: neither `LAZY` nor `UNTOUCHED` was made, and
    // the constant with a destructor, `CONST`, was never reached in this
    // coroutine (as with std, only blocks that reached it destroy it).
    assert_eq!(take_drops(), []);

    let never = Coroutine::new(|_: &Yielder<(), ()>, ()| ());
    drop(never);
    assert_eq!(take_drops(), []);
}

#[test]
fn many_coroutines_destroy_their_own_values() {
    let mut all: Vec<_> = (1..=50)
        .map(|id| {
            Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                touch(id);
                UNTOUCHED.with_borrow_mut(|v| v[0].tag.set(id + 100));
                y.suspend(());
                if id % 2 == 0 {
                    panic::resume_unwind(Box::new(id));
                }
            })
        })
        .collect();
    for co in &mut all {
        co.resume(());
    }
    // Odd ones return, even ones panic, every third is dropped suspended.
    for (id, co) in (1..=50).zip(&mut all) {
        if id % 3 != 0 {
            let _ = panic::catch_unwind(AssertUnwindSafe(|| co.resume(())));
        }
    }
    drop(all);
    let expected: Vec<_> = (1..=50)
        .flat_map(|id| [(id, id), (id, id), (id + 100, id)])
        .collect();
    assert_eq!(take_drops(), take_drops_of(expected));
    // The thread's own block saw none of it.
    assert_eq!(ID.get(), 0);
}

#[test]
fn a_destructor_can_use_the_coroutine_while_its_block_is_destroyed() {
    struct Reporter;
    impl Drop for Reporter {
        fn drop(&mut self) {
            // Alive values are the coroutine's; a value not made yet is
            // made now, and destroyed next.
            let lazy = LAZY.try_with(|l| l.tag.get());
            DROPS.with_borrow_mut(|d| d.push((ID.get(), u32::from(lazy.is_ok()))));
        }
    }
    co_local! {
        static REPORTER: RefCell<Option<Reporter>> = const { RefCell::new(None) };
    }
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        ID.set(6);
        REPORTER.set(Some(Reporter));
        y.suspend(());
    });
    co.resume(());
    drop(co);
    // `LAZY` was never made in this coroutine: the destructor makes it
    // (tagged 6, in the coroutine's block), and it dies right after;
    // `CONST` was never reached, so it is not destroyed.
    assert_eq!(take_drops(), [(6, 1), (6, 6)]);
}

#[test]
fn a_coroutine_dropped_at_thread_exit_unwinds_and_destroys_its_values() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    co_local! {
        static HELD_VALUE: RefCell<Option<Count>> = const { RefCell::new(None) };
    }
    std::thread_local! {
        static HELD: RefCell<Option<Coroutine<(), (), ()>>> = const { RefCell::new(None) };
    }

    let on_stack = Arc::new(AtomicUsize::new(0));
    let in_block = Arc::new(AtomicUsize::new(0));
    let (s, b) = (on_stack.clone(), in_block.clone());
    std::thread::spawn(move || {
        let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            let _count = Count(s);
            HELD_VALUE.set(Some(Count(b)));
            y.suspend(());
        });
        co.resume(());
        // Dropped by the thread-local's destructor, as the thread exits.
        HELD.with(|held| *held.borrow_mut() = Some(co));
    })
    .join()
    .unwrap();
    assert_eq!(on_stack.load(Ordering::SeqCst), 1);
    assert_eq!(in_block.load(Ordering::SeqCst), 1);
}
