//! Values that follow the work (SPEC.md): `#[inherit]` copies into new
//! coroutines and blocks, `LocalKey::scope` overrides, and `Locals::reset`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use co_local::{co_local, Locals};
use co_local_tests::{catch, message};
use co_runtime::{Coroutine, CoroutineResult};

/// A child span: the parent's id times ten plus one.
fn child_span(parent: &Cell<u64>) -> Cell<u64> {
    Cell::new(parent.get() * 10 + 1)
}

co_local! {
    /// The request a piece of work serves: follows it everywhere.
    #[inherit]
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    /// Log lines of the work: lazy, inherited when made.
    #[inherit]
    static TAGS: RefCell<Vec<String>> = RefCell::new(Vec::new());
    /// A tracing span: each new coroutine starts a child span.
    #[inherit(with = child_span)]
    static SPAN: Cell<u64> = const { Cell::new(1) };
    /// Per coroutine, never inherited.
    static RETRIES: Cell<u32> = const { Cell::new(0) };
}

type Co<R> = Coroutine<(), (), R>;

/// What each level saw: request id, span, retries, tags.
type Seen = (u64, u64, u32, Vec<String>);

#[test]
fn nested_coroutines_three_levels_deep_inherit_some_values_and_not_others() {
    let mut top = Locals::new();
    let seen = top.enter(|| {
        REQUEST_ID.set(7);
        SPAN.set(2);
        RETRIES.set(9);
        let mut level1: Co<Vec<Seen>> = Coroutine::new(|_, ()| {
            let mut seen = vec![(REQUEST_ID.get(), SPAN.get(), RETRIES.get(), TAGS.take())];
            TAGS.with_borrow_mut(|t| t.push(String::from("level 1")));
            RETRIES.set(1);
            let mut level2: Co<Vec<Seen>> = Coroutine::new(|_, ()| {
                let mut seen = vec![(
                    REQUEST_ID.get(),
                    SPAN.get(),
                    RETRIES.get(),
                    TAGS.with_borrow(Clone::clone),
                )];
                REQUEST_ID.set(8);
                let mut level3: Co<Seen> = Coroutine::new(|_, ()| {
                    (
                        REQUEST_ID.get(),
                        SPAN.get(),
                        RETRIES.get(),
                        TAGS.with_borrow(Clone::clone),
                    )
                });
                seen.push(level3.resume(()).as_return().unwrap());
                seen
            });
            seen.extend(level2.resume(()).as_return().unwrap());
            seen
        });
        level1.resume(()).as_return().unwrap()
    });
    assert_eq!(
        seen,
        [
            // `TAGS` was never made in `top`: level 1 starts with it unmade.
            (7, 21, 0, vec![]),
            (7, 211, 0, vec![String::from("level 1")]),
            (8, 2111, 0, vec![String::from("level 1")]),
        ]
    );
    // The parent's values are its own.
    assert_eq!(
        top.enter(|| (REQUEST_ID.get(), SPAN.get(), RETRIES.get())),
        (7, 2, 9)
    );
}

#[test]
fn a_coroutine_inherits_from_the_threads_own_block() {
    std::thread::spawn(|| {
        REQUEST_ID.set(31);
        TAGS.with_borrow_mut(|t| t.push(String::from("thread")));
        let mut co: Co<(u64, Vec<String>)> =
            Coroutine::new(|_, ()| (REQUEST_ID.get(), TAGS.take()));
        assert_eq!(
            co.resume(()).as_return(),
            Some((31, vec![String::from("thread")]))
        );
        // Taken from the coroutine's copy, not the thread's.
        assert_eq!(TAGS.with_borrow(Vec::len), 1);
    })
    .join()
    .unwrap();
}

#[test]
fn locals_new_starts_fresh_and_locals_inherit_copies() {
    let mut parent = Locals::new();
    parent.enter(|| {
        REQUEST_ID.set(5);
        SPAN.set(3);
        let mut fresh = Locals::new();
        assert_eq!(fresh.enter(|| (REQUEST_ID.get(), SPAN.get())), (0, 1));
        let mut child = Locals::inherit();
        assert_eq!(child.enter(|| (REQUEST_ID.get(), SPAN.get())), (5, 31));
    });
    let decl = |name: &str| {
        co_local::declarations()
            .iter()
            .find(|d| d.name() == name)
            .unwrap()
    };
    assert!(decl("REQUEST_ID").inherits());
    assert!(decl("SPAN").inherits());
    assert!(!decl("RETRIES").inherits());
}

/// Counts its clones and drops; its `Clone` panics when told to.
struct Fragile {
    alive: Rc<Cell<i32>>,
    fail: Rc<Cell<bool>>,
}

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert!(!self.fail.get(), "clone failed");
        self.alive.set(self.alive.get() + 1);
        Fragile {
            alive: self.alive.clone(),
            fail: self.fail.clone(),
        }
    }
}

impl Drop for Fragile {
    fn drop(&mut self) {
        self.alive.set(self.alive.get() - 1);
    }
}

co_local! {
    #[inherit]
    static FIRST: RefCell<Option<Fragile>> = RefCell::new(None);
    #[inherit]
    static SECOND: RefCell<Option<Fragile>> = RefCell::new(None);
}

#[test]
fn a_panicking_clone_makes_the_creation_panic_and_leaks_nothing() {
    let alive = Rc::new(Cell::new(0));
    let fail = Rc::new(Cell::new(false));
    let mut parent = Locals::new();
    let make = |fail_second: bool| Fragile {
        alive: {
            alive.set(alive.get() + 1);
            alive.clone()
        },
        fail: Rc::new(Cell::new(fail_second)),
    };
    parent.enter(|| {
        FIRST.set(Some(make(false)));
        SECOND.set(Some(make(true)));
    });
    assert_eq!(alive.get(), 2);
    // Whichever is copied first succeeds, the other panics: the first copy
    // is destroyed with the half-made block, and the creation panics.
    let err = parent
        .enter(|| catch(|| Coroutine::<(), (), ()>::new(|_, ()| ())))
        .unwrap_err();
    assert_eq!(message(&*err), "clone failed");
    assert_eq!(alive.get(), 2, "a copy leaked");
    let err = parent.enter(|| catch(Locals::inherit)).unwrap_err();
    assert_eq!(message(&*err), "clone failed");
    assert_eq!(alive.get(), 2, "a copy leaked");
    // The parent's values are untouched.
    parent.enter(|| {
        assert!(FIRST.with_borrow(Option::is_some));
        assert!(SECOND.with_borrow(Option::is_some));
    });
    drop(parent);
    assert_eq!(alive.get(), 0);
    drop(fail);
}

// ---------------------------------------------------------------------------
// `scope`
// ---------------------------------------------------------------------------

co_local! {
    static CUR_MON: Cell<Option<u32>> = const { Cell::new(None) };
    static OUTPUT: RefCell<String> = RefCell::new(String::from("monitor"));
}

#[test]
fn scopes_nest_and_put_the_previous_value_back() {
    CUR_MON.set(Some(1));
    let inner = CUR_MON.scope(Some(2), || {
        assert_eq!(CUR_MON.get(), Some(2));
        CUR_MON.scope(Some(3), || CUR_MON.get())
    });
    assert_eq!(inner, Some(3));
    assert_eq!(CUR_MON.get(), Some(1));
    let captured = OUTPUT.scope(String::new(), || {
        OUTPUT.with_borrow_mut(|o| o.push_str("captured"));
        OUTPUT.take()
    });
    assert_eq!(captured, "captured");
    assert_eq!(OUTPUT.with_borrow(Clone::clone), "monitor");
}

#[test]
fn a_scope_belongs_to_its_coroutine_across_suspensions() {
    let mut a: Coroutine<(), Option<u32>, Option<u32>> = Coroutine::new(|y, ()| {
        CUR_MON.set(Some(10));
        let during = CUR_MON.scope(Some(11), || {
            y.suspend(CUR_MON.get());
            CUR_MON.get()
        });
        assert_eq!(during, Some(11));
        CUR_MON.get()
    });
    let mut b: Coroutine<(), Option<u32>, Option<u32>> = Coroutine::new(|y, ()| {
        CUR_MON.set(Some(20));
        y.suspend(CUR_MON.get());
        CUR_MON.get()
    });
    CUR_MON.set(Some(1));
    assert_eq!(a.resume(()), CoroutineResult::Yield(Some(11)));
    assert_eq!(b.resume(()), CoroutineResult::Yield(Some(20)));
    assert_eq!(CUR_MON.get(), Some(1));
    assert_eq!(a.with_locals(|| CUR_MON.get()), Some(Some(11)));
    assert_eq!(b.resume(()), CoroutineResult::Return(Some(20)));
    assert_eq!(a.resume(()), CoroutineResult::Return(Some(10)));
}

#[test]
fn a_scope_puts_the_value_back_on_panic() {
    CUR_MON.set(Some(4));
    let err = catch(|| CUR_MON.scope(Some(5), || panic!("inside the scope"))).unwrap_err();
    assert_eq!(message(&*err), "inside the scope");
    assert_eq!(CUR_MON.get(), Some(4));
}

#[test]
fn a_scope_puts_the_value_back_when_its_coroutine_is_dropped_suspended() {
    std::thread_local! {
        static SEEN_AT_DROP: Cell<Option<Option<u32>>> = const { Cell::new(None) };
    }
    struct Report;
    impl Drop for Report {
        fn drop(&mut self) {
            SEEN_AT_DROP.set(Some(CUR_MON.get()));
        }
    }
    co_local! {
        static REPORT: RefCell<Option<Report>> = const { RefCell::new(None) };
    }
    let mut co: Co<()> = Coroutine::new(|y, ()| {
        CUR_MON.set(Some(6));
        REPORT.set(Some(Report));
        CUR_MON.scope(Some(7), || y.suspend(()));
    });
    co.resume(());
    drop(co);
    // The block's destructors ran after the unwinding put the value back.
    assert_eq!(SEEN_AT_DROP.get(), Some(Some(6)));
}

// ---------------------------------------------------------------------------
// `reset`
// ---------------------------------------------------------------------------

std::thread_local! {
    static RESET_LOG: RefCell<Vec<(String, u64)>> = const { RefCell::new(Vec::new()) };
}

struct ReadsRequest(&'static str);

impl Drop for ReadsRequest {
    fn drop(&mut self) {
        // A destructor that reads another value of its block.
        let request = REQUEST_ID.try_with(|r| r.get()).unwrap_or(u64::MAX);
        RESET_LOG.with_borrow_mut(|l| l.push((self.0.to_owned(), request)));
    }
}

co_local! {
    static READS: RefCell<Option<ReadsRequest>> = RefCell::new(None);
    static COUNTER: Cell<u64> = Cell::new(100);
}

#[test]
fn reset_destroys_what_was_made_and_starts_over_in_place() {
    let mut pooled = Locals::new();
    let raw = pooled.as_raw();
    pooled.enter(|| {
        REQUEST_ID.set(12);
        COUNTER.set(101);
        READS.set(Some(ReadsRequest("first job")));
    });
    pooled.reset();
    assert_eq!(
        RESET_LOG.with_borrow_mut(std::mem::take),
        [(String::from("first job"), 12)]
    );
    assert_eq!(pooled.as_raw(), raw, "reset in place, no new allocation");
    pooled.enter(|| {
        assert_eq!(REQUEST_ID.get(), 0, "constants back");
        assert_eq!(COUNTER.get(), 100, "lazy values made anew");
        assert!(READS.with_borrow(Option::is_none));
        READS.set(Some(ReadsRequest("second job")));
        REQUEST_ID.set(13);
    });
    drop(pooled);
    assert_eq!(
        RESET_LOG.with_borrow_mut(std::mem::take),
        [(String::from("second job"), 13)]
    );
}

#[test]
fn reset_of_a_block_something_still_refers_to_replaces_it() {
    let mut task = Locals::new();
    let raw = task.as_raw();
    task.enter(|| OUTPUT.set(String::from("held")));
    // A coroutine that holds a reference into the block while suspended.
    let mut co = corosensei::Coroutine::new(|y: &corosensei::Yielder<(), ()>, ()| {
        OUTPUT.with_borrow(|o| {
            y.suspend(());
            o.clone()
        })
    });
    task.enter(|| co.resume(()));
    task.reset();
    assert_ne!(task.as_raw(), raw, "a new block took its place");
    assert_eq!(
        task.enter(|| OUTPUT.with_borrow(Clone::clone)),
        "monitor",
        "the new block starts fresh"
    );
    match co.resume(()) {
        corosensei::CoroutineResult::Return(s) => assert_eq!(s, "held"),
        corosensei::CoroutineResult::Yield(()) => panic!("should have returned"),
    }
}

/// Allocation balance over many inherited creations is checked by
/// `reliability_alloc`'s counting allocator; here, that the copies are
/// dropped with their coroutines.
#[test]
fn inherited_copies_are_dropped_with_their_coroutines() {
    let alive = Rc::new(Cell::new(0));
    let mut parent = Locals::new();
    parent.enter(|| {
        FIRST.set(Some(Fragile {
            alive: {
                alive.set(1);
                alive.clone()
            },
            fail: Rc::new(Cell::new(false)),
        }))
    });
    for _ in 0..1_000 {
        let mut co: Co<bool> =
            parent.enter(|| Coroutine::new(|_, ()| FIRST.with_borrow(Option::is_some)));
        assert_eq!(alive.get(), 2);
        assert_eq!(co.resume(()), CoroutineResult::Return(true));
        assert_eq!(alive.get(), 1);
    }
    drop(parent);
    assert_eq!(alive.get(), 0);
}
