//! Destruction of blocks: std's own thread-local scenarios, adapted, and drop
//! counts for every way a block ends.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use co_local::{co_local, AccessError, Locals};

/// Counts drops into a shared counter.
struct Tracked(Rc<Cell<u32>>);
impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

co_local! {
    static TRACKED_LAZY: RefCell<Option<Tracked>> = RefCell::new(None);
    static TRACKED_CONST: RefCell<Option<Tracked>> = const { RefCell::new(None) };
}

#[test]
fn each_made_value_is_dropped_exactly_once_when_the_block_drops() {
    let drops = Rc::new(Cell::new(0));
    let mut block = Locals::new();
    block.enter(|| {
        TRACKED_LAZY.set(Some(Tracked(drops.clone())));
        TRACKED_CONST.set(Some(Tracked(drops.clone())));
    });
    assert_eq!(drops.get(), 0);
    drop(block);
    assert_eq!(drops.get(), 2);

    // A block whose values were never touched drops nothing.
    let untouched = Locals::new();
    drop(untouched);
    assert_eq!(drops.get(), 2);
}

#[test]
fn a_block_dropped_from_inside_another_block_drops_its_own_values() {
    let drops = Rc::new(Cell::new(0));
    let mut inner = Locals::new();
    inner.enter(|| TRACKED_LAZY.set(Some(Tracked(drops.clone()))));
    let mut outer = Locals::new();
    outer.enter(|| {
        TRACKED_LAZY.set(Some(Tracked(drops.clone())));
        drop(inner);
        assert_eq!(drops.get(), 1);
        // The outer block's value is untouched and still current.
        assert!(TRACKED_LAZY.with_borrow(Option::is_some));
    });
    drop(outer);
    assert_eq!(drops.get(), 2);
}

// --- std `states`: a destructor sees `try_with` fail on its own key. ---

std::thread_local! {
    static STATE_SEEN: Cell<Option<bool>> = const { Cell::new(None) };
}

struct SeesOwnKey;
impl Drop for SeesOwnKey {
    fn drop(&mut self) {
        STATE_SEEN.set(Some(SEES_OWN_KEY.try_with(|_| ()).is_err()));
    }
}

co_local! {
    static SEES_OWN_KEY: SeesOwnKey = SeesOwnKey;
    static SEES_OWN_KEY_CONST: SeesOwnKeyConst = const { SeesOwnKeyConst };
}

struct SeesOwnKeyConst;
impl Drop for SeesOwnKeyConst {
    fn drop(&mut self) {
        STATE_SEEN.set(Some(SEES_OWN_KEY_CONST.try_with(|_| ()).is_err()));
    }
}

#[test]
fn destructor_sees_try_with_fail_on_its_own_key() {
    STATE_SEEN.set(None);
    let mut block = Locals::new();
    block.enter(|| SEES_OWN_KEY.with(|_| ()));
    drop(block);
    assert_eq!(STATE_SEEN.get(), Some(true));

    STATE_SEEN.set(None);
    let mut block = Locals::new();
    block.enter(|| SEES_OWN_KEY_CONST.with(|_| ()));
    drop(block);
    assert_eq!(STATE_SEEN.get(), Some(true));
}

// --- std `circular`: two keys whose destructors reach each other. ---

struct Circular1;
struct Circular2;
std::thread_local! {
    static CIRCULAR_LOG: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}
co_local! {
    static K1: RefCell<Option<Circular1>> = RefCell::new(None);
    static K2: RefCell<Option<Circular2>> = RefCell::new(None);
}
impl Drop for Circular1 {
    fn drop(&mut self) {
        let log = match K2.try_with(|k2| k2.borrow().is_some()) {
            Ok(true) => "1 saw 2 alive",
            Ok(false) => "1 saw 2 empty",
            Err(AccessError { .. }) => "1 saw 2 destroyed",
        };
        CIRCULAR_LOG.with_borrow_mut(|l| l.push(log));
    }
}
impl Drop for Circular2 {
    fn drop(&mut self) {
        let log = match K1.try_with(|k1| k1.borrow().is_some()) {
            Ok(true) => "2 saw 1 alive",
            Ok(false) => "2 saw 1 empty",
            Err(_) => "2 saw 1 destroyed",
        };
        CIRCULAR_LOG.with_borrow_mut(|l| l.push(log));
    }
}

#[test]
fn circular_destructors_see_each_other_alive_then_destroyed() {
    CIRCULAR_LOG.with_borrow_mut(Vec::clear);
    let mut block = Locals::new();
    block.enter(|| {
        K1.set(Some(Circular1));
        K2.set(Some(Circular2));
    });
    drop(block);
    let log = CIRCULAR_LOG.take();
    assert_eq!(log.len(), 2, "{log:?}");
    // Whichever runs first sees the other alive; the second sees the first
    // destroyed. Never UB, never a panic.
    assert!(
        log == ["1 saw 2 alive", "2 saw 1 destroyed"]
            || log == ["2 saw 1 alive", "1 saw 2 destroyed"],
        "{log:?}"
    );
}

// --- std `dtors_in_dtors_in_dtors`: a destructor reaching a key not made yet. ---

struct InitsOther(Rc<Cell<u32>>);
impl Drop for InitsOther {
    fn drop(&mut self) {
        // A lazy value never made is made while its block is destroyed, and
        // dies after this destructor.
        assert!(NOT_MADE_YET.try_with(|_| ()).is_ok());
        self.0.set(self.0.get() + 1);
    }
}
std::thread_local! {
    static NOT_MADE_RUNS: Cell<u32> = const { Cell::new(0) };
    static NOT_MADE_DROPS: Cell<u32> = const { Cell::new(0) };
}
struct CountsDrops;
impl Drop for CountsDrops {
    fn drop(&mut self) {
        NOT_MADE_DROPS.set(NOT_MADE_DROPS.get() + 1);
    }
}
co_local! {
    static INITS_OTHER: RefCell<Option<InitsOther>> = RefCell::new(None);
    static NOT_MADE_YET: CountsDrops = {
        NOT_MADE_RUNS.set(NOT_MADE_RUNS.get() + 1);
        CountsDrops
    };
}

#[test]
fn a_destructor_makes_a_value_its_dying_block_never_made_and_it_dies_next() {
    let drops = Rc::new(Cell::new(0));
    let (runs, dropped) = (NOT_MADE_RUNS.get(), NOT_MADE_DROPS.get());
    let mut block = Locals::new();
    block.enter(|| INITS_OTHER.set(Some(InitsOther(drops.clone()))));
    drop(block);
    assert_eq!(drops.get(), 1);
    assert_eq!(NOT_MADE_RUNS.get(), runs + 1, "the initialiser ran once");
    assert_eq!(NOT_MADE_DROPS.get(), dropped + 1, "and its value died");
}

// --- std `self_referential`: an initialiser that reaches its own key. ---

std::thread_local! {
    static SELF_REF_RUNS: Cell<u32> = const { Cell::new(0) };
}
co_local! {
    static SELF_REF: Cell<u32> = {
        let depth = SELF_REF_RUNS.get();
        SELF_REF_RUNS.set(depth + 1);
        if depth == 0 {
            // Reaching the key from its own initialiser runs the initialiser
            // again (like std) and makes the value; unlike std, that value
            // stays and the outer one is dropped: a reference to the inner
            // one may still be alive.
            assert_eq!(SELF_REF.get(), 2);
        }
        Cell::new(depth + 1)
    };
}

#[test]
fn self_referential_initialiser_is_not_ub() {
    SELF_REF_RUNS.set(0);
    let mut block = Locals::new();
    assert_eq!(block.enter(|| SELF_REF.get()), 2);
    assert_eq!(SELF_REF_RUNS.get(), 2);
}

// --- Threads: each has its own block, destroyed at thread exit. ---

struct CountsGlobally(&'static AtomicUsize);
impl Drop for CountsGlobally {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
static THREAD_DROPS: AtomicUsize = AtomicUsize::new(0);
co_local! {
    static PER_THREAD: RefCell<Option<CountsGlobally>> = RefCell::new(None);
    static PER_THREAD_ID: Cell<usize> = const { Cell::new(0) };
}

#[test]
fn each_thread_has_its_own_block_destroyed_at_exit() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (1..=4)
        .map(|i| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                assert_eq!(PER_THREAD_ID.get(), 0);
                PER_THREAD_ID.set(i);
                PER_THREAD.set(Some(CountsGlobally(&THREAD_DROPS)));
                // A block made on this thread, with its own copy.
                let mut block = Locals::new();
                block.enter(|| assert_eq!(PER_THREAD_ID.get(), 0));
                std::thread::yield_now();
                seen.lock().unwrap().push(PER_THREAD_ID.get());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(
        THREAD_DROPS.load(Ordering::SeqCst),
        4,
        "one drop per thread exit"
    );
}

struct DropsALocals(Option<Locals>, Rc<Cell<u32>>);
impl Drop for DropsALocals {
    fn drop(&mut self) {
        drop(self.0.take());
        self.1.set(self.1.get() + 1);
    }
}

#[test]
fn locals_can_be_dropped_from_a_thread_local_destructor_at_thread_exit() {
    static DONE: AtomicUsize = AtomicUsize::new(0);
    struct Flag;
    impl Drop for Flag {
        fn drop(&mut self) {
            DONE.fetch_add(1, Ordering::SeqCst);
        }
    }
    co_local! {
        static FLAG: RefCell<Option<Flag>> = RefCell::new(None);
    }
    std::thread_local! {
        static HOLDER: RefCell<Option<DropsALocals>> = const { RefCell::new(None) };
    }
    std::thread::spawn(|| {
        let mut block = Locals::new();
        block.enter(|| FLAG.set(Some(Flag)));
        FLAG.set(Some(Flag)); // the thread's own block too
        HOLDER.set(Some(DropsALocals(Some(block), Rc::new(Cell::new(0)))));
    })
    .join()
    .unwrap();
    assert_eq!(DONE.load(Ordering::SeqCst), 2);
}

#[test]
fn with_panics_with_a_clear_message_on_a_destroyed_value() {
    struct Probe;
    impl Drop for Probe {
        fn drop(&mut self) {
            let err = std::panic::catch_unwind(|| PROBE.with(|_| ())).unwrap_err();
            let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
            PROBE_MSG.set(msg);
        }
    }
    co_local! {
        static PROBE: Probe = Probe;
    }
    std::thread_local! {
        static PROBE_MSG: RefCell<String> = const { RefCell::new(String::new()) };
    }
    let mut block = Locals::new();
    block.enter(|| PROBE.with(|_| ()));
    drop(block);
    let msg = PROBE_MSG.take();
    assert!(
        msg.contains("cannot access the coroutine-local `locals_destruction::PROBE`")
            && msg.contains("is being or has been destroyed"),
        "{msg}"
    );
}

// --- `circular` again, for constants with a destructor: they carry no state
// byte; while their block dies, its header says which are destroyed. ---

struct ConstCircular1;
struct ConstCircular2;
std::thread_local! {
    static CONST_CIRCULAR_LOG: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}
co_local! {
    static C1: RefCell<Option<ConstCircular1>> = const { RefCell::new(None) };
    static C2: RefCell<Option<ConstCircular2>> = const { RefCell::new(None) };
}
impl Drop for ConstCircular1 {
    fn drop(&mut self) {
        let log = match C2.try_with(|c2| c2.borrow().is_some()) {
            Ok(true) => "1 saw 2 alive",
            Ok(false) => "1 saw 2 empty",
            Err(_) => "1 saw 2 destroyed",
        };
        assert!(C1.try_with(|_| ()).is_err(), "its own key is destroyed");
        CONST_CIRCULAR_LOG.with_borrow_mut(|l| l.push(log));
    }
}
impl Drop for ConstCircular2 {
    fn drop(&mut self) {
        let log = match C1.try_with(|c1| c1.borrow().is_some()) {
            Ok(true) => "2 saw 1 alive",
            Ok(false) => "2 saw 1 empty",
            Err(_) => "2 saw 1 destroyed",
        };
        assert!(C2.try_with(|_| ()).is_err(), "its own key is destroyed");
        CONST_CIRCULAR_LOG.with_borrow_mut(|l| l.push(log));
    }
}

#[test]
fn circular_destructors_of_constants_see_each_other_alive_then_destroyed() {
    CONST_CIRCULAR_LOG.with_borrow_mut(Vec::clear);
    for _ in 0..3 {
        // Also checks that a recycled block's constants are alive again.
        let mut block = Locals::new();
        block.enter(|| {
            C1.set(Some(ConstCircular1));
            C2.set(Some(ConstCircular2));
        });
        drop(block);
        let log = CONST_CIRCULAR_LOG.take();
        assert!(
            log == ["1 saw 2 alive", "2 saw 1 destroyed"]
                || log == ["2 saw 1 alive", "1 saw 2 destroyed"],
            "{log:?}"
        );
    }
}
