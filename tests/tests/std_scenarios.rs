//! The scenarios of std's own `thread_local!` tests, written for
//! `co_local!` with std's expectations, all in one test binary: values
//! without and with destructors per thread (`smoke`), what a destructor sees
//! of its own key (`states`, `self_referential`), two values whose
//! destructors make each other (`circular`), destructors that make values in
//! destructors (`dtors_in_dtors_in_dtors`, lazy and `const`), `join`
//! returning after the thread's values are destroyed, and
//! `std::thread::current()` inside a destructor. Each scenario runs at
//! thread exit (the thread's own block, as in std) and, where it teaches
//! more, in a `Locals` block as a coroutine has it.
//!
//! Then the scenario of a request that keeps a connection guard whose
//! destructor logs a last line into a lazy log: in a co_runtime coroutine, a
//! `Locals`, a `WithLocals` task and a thread's own block.
//!
//! The rules at work (std's): a block's values are destroyed in reverse
//! order of their making; a destructor reaches every value not destroyed
//! yet, and a value not made yet is made then and destroyed next; a value
//! whose destructor is running or has run gives `AccessErrorKind::Destroyed`.
//! Destructors that run at thread exit record what they saw instead of
//! asserting (a panic there aborts the process); each test checks the
//! record.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use co_local::{co_local, AccessErrorKind, LocalKey, Locals, WithLocals};
use co_local_tests::poll_once;
use co_runtime::{Coroutine, CoroutineResult, Yielder};

/// A flag one thread sets and another waits for (at most a minute, so that
/// a destructor that never runs fails the test instead of hanging it).
#[derive(Clone, Default)]
struct Signal {
    raised: Arc<Mutex<bool>>,
    wake: Arc<Condvar>,
}

impl Signal {
    fn raise(&self) {
        *self.raised.lock().unwrap() = true;
        self.wake.notify_all();
    }

    fn wait(&self) -> bool {
        let raised = self.raised.lock().unwrap();
        let (raised, _) = self
            .wake
            .wait_timeout_while(raised, Duration::from_secs(60), |raised| !*raised)
            .unwrap();
        *raised
    }
}

/// Raises its signal when dropped.
struct RaiseOnDrop(Signal);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.raise();
    }
}

// --- smoke: each thread (and each block) has its own value. ---

co_local! {
    static COUNT_LAZY: Cell<i32> = Cell::new(1);
    static COUNT_CONST: Cell<i32> = const { Cell::new(1) };
}

#[test]
fn smoke_without_destructors() {
    for key in [&COUNT_LAZY, &COUNT_CONST] {
        assert_eq!(key.get(), 1);
        key.set(2);
        thread::spawn(move || assert_eq!(key.get(), 1))
            .join()
            .unwrap();
        let mut block = Locals::new();
        assert_eq!(block.enter(|| key.get()), 1);
        assert_eq!(key.get(), 2);
    }
}

co_local! {
    static GUARD_LAZY: RefCell<Option<RaiseOnDrop>> = RefCell::new(None);
    static GUARD_CONST: RefCell<Option<RaiseOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn smoke_with_destructors() {
    for key in [&GUARD_LAZY, &GUARD_CONST] {
        let signal = Signal::default();
        let raise = signal.clone();
        let thread = thread::spawn(move || key.set(Some(RaiseOnDrop(raise))));
        assert!(signal.wait(), "the thread's value was destroyed");
        thread.join().unwrap();

        let signal = Signal::default();
        let mut block = Locals::new();
        block.enter(|| key.set(Some(RaiseOnDrop(signal.clone()))));
        drop(block);
        assert!(signal.wait(), "the block's value was destroyed");
    }
}

// --- states: a destructor finds its own key destroyed. ---

/// Records whether its own key was out of reach, and why, when dropped.
struct OwnKey(
    &'static LocalKey<OwnKey>,
    &'static Mutex<Vec<Option<AccessErrorKind>>>,
);

impl Drop for OwnKey {
    fn drop(&mut self) {
        let seen = self.0.try_with(|_| ()).err().map(|e| e.kind());
        self.1.lock().unwrap().push(seen);
    }
}

static STATES: Mutex<Vec<Option<AccessErrorKind>>> = Mutex::new(Vec::new());

co_local! {
    static STATES_LAZY: OwnKey = OwnKey(&STATES_LAZY, &STATES);
    static STATES_CONST: OwnKey = const { OwnKey(&STATES_CONST, &STATES) };
}

#[test]
fn states() {
    for key in [&STATES_LAZY, &STATES_CONST] {
        STATES.lock().unwrap().clear();
        thread::spawn(move || assert!(key.try_with(|_| ()).is_ok()))
            .join()
            .unwrap();
        let mut block = Locals::new();
        block.enter(|| assert!(key.try_with(|_| ()).is_ok()));
        drop(block);
        assert_eq!(
            *STATES.lock().unwrap(),
            [Some(AccessErrorKind::Destroyed); 2]
        );
    }
}

// --- circular: two values whose destructors put each other in place. ---

/// Puts a `Right` into its right key when dropped for the first time; the
/// second time, finds that key destroyed.
struct Left(&'static Circle);
/// Finds the left key reachable (made anew if needed) and puts a `Left`
/// into it.
struct Right(&'static Circle);

/// One run of the scenario: its two keys and what the destructors saw.
struct Circle {
    left: &'static LocalKey<RefCell<Option<Left>>>,
    right: &'static LocalKey<RefCell<Option<Right>>>,
    hits: AtomicUsize,
    wrong: Mutex<Vec<String>>,
}

impl Circle {
    fn expect(&self, ok: bool, what: &str) {
        if !ok {
            self.wrong.lock().unwrap().push(what.to_owned());
        }
    }
}

impl Drop for Left {
    fn drop(&mut self) {
        let c = self.0;
        let hits = c.hits.fetch_add(1, Ordering::SeqCst) + 1;
        match c.right.try_with(|_| ()) {
            Err(e) => c.expect(
                hits == 3 && e.kind() == AccessErrorKind::Destroyed,
                "the last left finds right destroyed",
            ),
            Ok(()) => {
                c.expect(hits == 1, "only the first left finds right alive");
                c.right.set(Some(Right(c)));
            }
        }
    }
}

impl Drop for Right {
    fn drop(&mut self) {
        let c = self.0;
        let hits = c.hits.fetch_add(1, Ordering::SeqCst) + 1;
        c.expect(hits == 2, "right dies second");
        c.expect(c.left.try_with(|_| ()).is_ok(), "right reaches left");
        c.left.set(Some(Left(c)));
    }
}

co_local! {
    static LEFT_LAZY: RefCell<Option<Left>> = RefCell::new(None);
    static RIGHT_LAZY: RefCell<Option<Right>> = RefCell::new(None);
    static LEFT_CONST: RefCell<Option<Left>> = const { RefCell::new(None) };
    static RIGHT_CONST: RefCell<Option<Right>> = const { RefCell::new(None) };
}

static CIRCLE_LAZY: Circle = Circle {
    left: &LEFT_LAZY,
    right: &RIGHT_LAZY,
    hits: AtomicUsize::new(0),
    wrong: Mutex::new(Vec::new()),
};
static CIRCLE_CONST: Circle = Circle {
    left: &LEFT_CONST,
    right: &RIGHT_CONST,
    hits: AtomicUsize::new(0),
    wrong: Mutex::new(Vec::new()),
};

#[test]
fn circular() {
    for circle in [&CIRCLE_LAZY, &CIRCLE_CONST] {
        // As std's: the first `Left` is dropped by the thread itself, and
        // puts a `Right` in place; at thread exit the `Right` dies and makes
        // the left key, whose `Left` dies last and finds the right key gone.
        for in_block in [false, true] {
            circle.hits.store(0, Ordering::SeqCst);
            let run = move || drop(Left(circle));
            if in_block {
                let mut block = Locals::new();
                block.enter(run);
            } else {
                thread::spawn(run).join().unwrap();
            }
            assert_eq!(circle.hits.load(Ordering::SeqCst), 3);
            assert_eq!(*circle.wrong.lock().unwrap(), Vec::<String>::new());
        }
    }
}

// --- self_referential: a value that holds its own key. ---

struct HoldsOwnKey(&'static LocalKey<RefCell<Option<HoldsOwnKey>>>);

static SELF_REFERENTIAL: Mutex<Vec<bool>> = Mutex::new(Vec::new());

impl Drop for HoldsOwnKey {
    fn drop(&mut self) {
        let gone = self.0.try_with(|_| ()).is_err();
        SELF_REFERENTIAL.lock().unwrap().push(gone);
    }
}

co_local! {
    static SELF_LAZY: RefCell<Option<HoldsOwnKey>> = RefCell::new(None);
    static SELF_CONST: RefCell<Option<HoldsOwnKey>> = const { RefCell::new(None) };
}

#[test]
fn self_referential() {
    for key in [&SELF_LAZY, &SELF_CONST] {
        SELF_REFERENTIAL.lock().unwrap().clear();
        thread::spawn(move || key.set(Some(HoldsOwnKey(key))))
            .join()
            .unwrap();
        assert_eq!(*SELF_REFERENTIAL.lock().unwrap(), [true]);
    }
}

// --- dtors_in_dtors_in_dtors: a destructor makes a value never made. ---

/// Puts a `RaiseOnDrop` into its other key when dropped: that key was never
/// reached on this thread, so it is made now and destroyed next.
struct MakesOther(Signal, &'static LocalKey<RefCell<Option<RaiseOnDrop>>>);

impl Drop for MakesOther {
    fn drop(&mut self) {
        let _ = self
            .1
            .try_with(|other| *other.borrow_mut() = Some(RaiseOnDrop(self.0.clone())));
    }
}

co_local! {
    static FIRST_LAZY: RefCell<Option<MakesOther>> = RefCell::new(None);
    static LATER_LAZY: RefCell<Option<RaiseOnDrop>> = RefCell::new(None);
    static FIRST_CONST: RefCell<Option<MakesOther>> = const { RefCell::new(None) };
    static LATER_CONST: RefCell<Option<RaiseOnDrop>> = const { RefCell::new(None) };
}

#[test]
fn dtors_in_dtors_in_dtors() {
    for (first, later) in [(&FIRST_LAZY, &LATER_LAZY), (&FIRST_CONST, &LATER_CONST)] {
        let signal = Signal::default();
        let raise = signal.clone();
        let thread = thread::spawn(move || first.set(Some(MakesOther(raise, later))));
        assert!(
            signal.wait(),
            "the value made in a destructor was destroyed"
        );
        thread.join().unwrap();

        let signal = Signal::default();
        let mut block = Locals::new();
        block.enter(|| first.set(Some(MakesOther(signal.clone(), later))));
        drop(block);
        assert!(signal.wait(), "likewise in a block");
    }
}

// --- join orders after the thread's destructors. ---

/// Takes its time, then says it is done.
struct SlowToDrop(&'static AtomicBool);

impl Drop for SlowToDrop {
    fn drop(&mut self) {
        thread::sleep(Duration::from_millis(20));
        self.0.store(true, Ordering::SeqCst);
    }
}

co_local! {
    static SLOW: RefCell<Option<SlowToDrop>> = RefCell::new(None);
}

#[test]
fn join_orders_after_the_threads_destructors() {
    static DONE: AtomicBool = AtomicBool::new(false);
    for _ in 0..5 {
        DONE.store(false, Ordering::SeqCst);
        thread::spawn(|| SLOW.set(Some(SlowToDrop(&DONE))))
            .join()
            .unwrap();
        assert!(DONE.load(Ordering::SeqCst), "join returned before it ran");
    }
}

// --- thread::current() inside a destructor. ---

/// When dropped, reaches `NAMER` for the first time, so that it is made
/// during the destruction of the thread's own block and dies next.
struct ReachesNamer;
/// When dropped, writes down the name of the thread it dies on.
struct Namer;

static THREAD_NAME_SEEN: Mutex<Option<String>> = Mutex::new(None);

impl Drop for ReachesNamer {
    fn drop(&mut self) {
        let _ = NAMER.try_with(|_| {});
    }
}

impl Drop for Namer {
    fn drop(&mut self) {
        *THREAD_NAME_SEEN.lock().unwrap() = thread::current().name().map(str::to_owned);
    }
}

co_local! {
    static REACHES_NAMER: ReachesNamer = const { ReachesNamer };
    static NAMER: Namer = const { Namer };
}

#[test]
fn thread_current_in_a_destructor() {
    thread::Builder::new()
        .name(String::from("named-worker"))
        .spawn(|| REACHES_NAMER.with(|_| {}))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        THREAD_NAME_SEEN.lock().unwrap().as_deref(),
        Some("named-worker")
    );
}

// --- The connection guard of a request, in every kind of block. ---

/// Lines every `Log` hands over when it is dropped, tagged by request.
static SINK: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A request's log: made on first use, flushed to `SINK` when it dies.
struct Log(Vec<String>);

impl Drop for Log {
    fn drop(&mut self) {
        SINK.lock().unwrap().append(&mut self.0);
    }
}

/// A connection: its guard logs a last line when it goes.
struct Conn(u32);

impl Drop for Conn {
    fn drop(&mut self) {
        log(&format!("{}: close", self.0));
    }
}

co_local! {
    static CONN: RefCell<Option<Conn>> = const { RefCell::new(None) };
    static LOG: RefCell<Log> = RefCell::new(Log(Vec::new()));
}

fn log(line: &str) {
    LOG.with_borrow_mut(|log| log.0.push(line.to_owned()));
}

/// The lines of request `id` that reached the sink.
fn lines_of(id: u32) -> Vec<String> {
    let prefix = format!("{id}: ");
    SINK.lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .cloned()
        .collect()
}

/// A request: the connection first, then (if `logs`) a line of its own.
fn request(id: u32, logs: bool) {
    if logs {
        log(&format!("{id}: open"));
    }
    CONN.set(Some(Conn(id)));
    if logs {
        log(&format!("{id}: query"));
    }
}

/// What request `id` must have logged once its block is gone.
fn expected(id: u32, logs: bool) -> Vec<String> {
    let lines: &[&str] = if logs {
        &["open", "query", "close"]
    } else {
        &["close"]
    };
    lines.iter().map(|l| format!("{id}: {l}")).collect()
}

#[test]
fn the_close_line_of_a_connection_guard_is_logged_in_every_kind_of_block() {
    for logs in [false, true] {
        let base = if logs { 100 } else { 200 };
        // A co_runtime coroutine, dropped while suspended.
        let mut co: Coroutine<(), (), ()> = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            request(base + 1, logs);
            y.suspend(());
        });
        assert_eq!(co.resume(()), CoroutineResult::Yield(()));
        drop(co);
        // A co_runtime coroutine that returns.
        let mut co: Coroutine<(), (), ()> = Coroutine::new(move |_: &Yielder<(), ()>, ()| {
            request(base + 2, logs);
        });
        assert_eq!(co.resume(()), CoroutineResult::Return(()));
        // A `Locals`.
        let mut block = Locals::new();
        block.enter(|| request(base + 3, logs));
        drop(block);
        // A `WithLocals` task that completes.
        let mut task = WithLocals::new(std::future::ready(()));
        task.with_locals(|| request(base + 4, logs));
        assert!(poll_once(&mut task).is_ready());
        // The thread's own block, at thread exit.
        thread::spawn(move || request(base + 5, logs))
            .join()
            .unwrap();
        for id in base + 1..=base + 5 {
            assert_eq!(lines_of(id), expected(id, logs), "request {id}");
        }
    }
}

#[test]
fn values_die_in_reverse_order_of_their_making_whatever_the_declaration_order() {
    // `LOG` is declared after `CONN`; made first, it dies last and takes
    // the close line. Made after the connection, it would die first (as
    // with std's thread-locals), and the close line is then refused.
    let mut block = Locals::new();
    block.enter(|| {
        log("300: open");
        CONN.set(Some(Conn(300)));
    });
    drop(block);
    assert_eq!(lines_of(300), ["300: open", "300: close"]);

    struct Tries(u32);
    impl Drop for Tries {
        fn drop(&mut self) {
            let refused = LOG.try_with(|_| ()).err().map(|e| e.kind());
            TRIED.lock().unwrap().push((self.0, refused));
        }
    }
    static TRIED: Mutex<Vec<(u32, Option<AccessErrorKind>)>> = Mutex::new(Vec::new());
    co_local! {
        static TRIES: RefCell<Option<Tries>> = const { RefCell::new(None) };
    }
    let mut block = Locals::new();
    block.enter(|| {
        TRIES.set(Some(Tries(301)));
        log("301: open");
    });
    drop(block);
    assert_eq!(lines_of(301), ["301: open"]);
    assert_eq!(
        *TRIED.lock().unwrap(),
        [(301, Some(AccessErrorKind::Destroyed))]
    );
}

// --- Destructors that make each other in a cycle: destruction ends. ---

/// Dropped once per key: makes every other key of the ring that is not
/// made yet (those already destroyed refuse, and are never made again).
struct Ring(usize);

static RING_DROPS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

impl Drop for Ring {
    fn drop(&mut self) {
        RING_DROPS.lock().unwrap().push(self.0);
        for (j, key) in RING.iter().enumerate() {
            let _ = key.try_with(|slot| {
                if let Ok(mut slot) = slot.try_borrow_mut() {
                    slot.get_or_insert_with(|| Ring(j));
                }
            });
        }
    }
}

co_local! {
    static RING_0: RefCell<Option<Ring>> = RefCell::new(None);
    static RING_1: RefCell<Option<Ring>> = RefCell::new(None);
    static RING_2: RefCell<Option<Ring>> = const { RefCell::new(None) };
    static RING_3: RefCell<Option<Ring>> = RefCell::new(None);
    static RING_4: RefCell<Option<Ring>> = const { RefCell::new(None) };
}

static RING: [&LocalKey<RefCell<Option<Ring>>>; 5] = [&RING_0, &RING_1, &RING_2, &RING_3, &RING_4];

#[test]
fn destructors_that_make_each_other_in_a_cycle_end() {
    for at_thread_exit in [false, true] {
        RING_DROPS.lock().unwrap().clear();
        let start = || RING_0.set(Some(Ring(0)));
        if at_thread_exit {
            thread::spawn(start).join().unwrap();
        } else {
            let mut block = Locals::new();
            block.enter(start);
        }
        // `Ring(0)` makes 1 to 4 in that order; the newest dies next, and
        // each finds the others alive or destroyed: every key dies once.
        assert_eq!(*RING_DROPS.lock().unwrap(), [0, 4, 3, 2, 1]);
    }
}
