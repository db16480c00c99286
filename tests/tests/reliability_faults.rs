//! Faults around coroutines and their co_local values, each with its
//! documented outcome checked: panicking destructors of coroutine-local
//! values (when the coroutine returns, panics, or is dropped), panics during
//! the forced unwinding of a dropped coroutine, threads that exit holding
//! suspended coroutines, lazy initialisers that suspend their coroutine, and
//! `with` closures that suspend while the same key is reached from elsewhere.
//!
//! None of these may be UB or abort the test binary. The outcomes that are an
//! abort by design (a panic escaping a destructor that runs during unwinding,
//! or escaping a thread-local's destructor: Rust aborts in both cases) run in
//! a child process: the test binary re-runs itself on one test, with
//! `CHILD_SCENARIO` set, and the parent checks how the child died.

use std::cell::{Cell, RefCell};
use std::panic;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once};

use co_local::{co_local, AccessError};
use co_local_tests::{catch, message};
use co_runtime::{Coroutine, CoroutineResult, Yielder};

// ---------------------------------------------------------------------------
// Helpers.

/// Values dropped on this thread: `(tag, ID current at the time)`.
type Log = Arc<Mutex<Vec<(u32, u32)>>>;

std::thread_local! {
    /// Panics the hook saw on this thread (tests run in parallel threads).
    static HOOK_CALLS: Cell<u32> = const { Cell::new(0) };
}

/// Installs (once) a panic hook that counts panics per thread, then reports
/// them as usual.
fn count_hook_calls() -> u32 {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let _ = HOOK_CALLS.try_with(|calls| calls.set(calls.get() + 1));
            default(info);
        }));
    });
    HOOK_CALLS.with(Cell::get)
}

fn hook_calls() -> u32 {
    HOOK_CALLS.with(Cell::get)
}

/// A value that logs its drop, with the `ID` current at the time, and then
/// panics with "boom {tag}" if it is armed.
#[derive(Debug)]
struct Tracked {
    tag: u32,
    armed: bool,
    log: Log,
}

impl Tracked {
    fn new(tag: u32, log: &Log) -> Tracked {
        Tracked {
            tag,
            armed: false,
            log: log.clone(),
        }
    }

    fn armed(tag: u32, log: &Log) -> Tracked {
        let mut tracked = Tracked::new(tag, log);
        tracked.armed = true;
        tracked
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // `ID` has no destructor: it stays readable while its block is
        // destroyed; only a thread's own block that is gone refuses it.
        let id = ID.try_with(Cell::get).unwrap_or(u32::MAX);
        self.log.lock().unwrap().push((self.tag, id));
        if self.armed {
            panic!("boom {}", self.tag);
        }
    }
}

fn sorted(log: &Log) -> Vec<(u32, u32)> {
    let mut drops = std::mem::take(&mut *log.lock().unwrap());
    drops.sort_unstable();
    drops
}

co_local! {
    /// Which coroutine this is; a constant without destructor.
    static ID: Cell<u32> = const { Cell::new(0) };
    /// A constant with a destructor.
    static CONST_SLOT: RefCell<Option<Tracked>> = const { RefCell::new(None) };
    /// A lazy value with a destructor.
    static LAZY_SLOT: RefCell<Option<Tracked>> = RefCell::new(None);
    /// Another lazy value with a destructor.
    static OTHER_SLOT: RefCell<Vec<Tracked>> = RefCell::new(Vec::new());
}

// ---------------------------------------------------------------------------
// 1. A destructor of a coroutine-local value panics.

/// Documented on `Coroutine::resume`: "If the closure returns but a
/// destructor of its co_local values panics, that panic comes out here (the
/// coroutine is done)". Every value is still destroyed, once; with two
/// panicking destructors, one panic comes out and the other has been
/// reported by the hook (`Block`'s drop: "the first panic is resumed").
#[test]
fn a_destructor_panic_when_the_coroutine_returns_comes_out_of_resume() {
    let hooks = count_hook_calls();
    let log = Log::default();
    let l = log.clone();
    let mut co = Coroutine::new(move |_: &Yielder<(), ()>, ()| {
        ID.set(1);
        CONST_SLOT.set(Some(Tracked::armed(10, &l)));
        LAZY_SLOT.set(Some(Tracked::armed(11, &l)));
        OTHER_SLOT.with_borrow_mut(|v| v.push(Tracked::new(12, &l)));
        // The return value is lost with the panic: dropped once, while the
        // panic leaves `resume`, with the caller's block current.
        Tracked::new(13, &l)
    });
    let payload = catch(|| co.resume(())).unwrap_err();
    let boom = message(&*payload);
    assert!(boom == "boom 10" || boom == "boom 11", "{boom}");
    assert_eq!(hook_calls() - hooks, 2, "both panics were reported");
    assert_eq!(sorted(&log), [(10, 1), (11, 1), (12, 1), (13, 0)]);
    assert!(co.started() && co.done());
    assert_eq!(co.with_locals(|| ()), None);
    assert_eq!(ID.get(), 0, "the caller's block is current again");
    let again = catch(|| co.resume(())).unwrap_err();
    assert_eq!(
        message(&*again),
        "cannot resume a coroutine that has finished"
    );
}

/// Documented on `Coroutine::resume`: a panic of the closure comes out of
/// `resume` with its payload, after the coroutine's values have been
/// destroyed. A destructor that panics meanwhile is not documented there;
/// the code (`RawCoroutine::finished`) reports it through the panic hook
/// and drops it: the closure's payload is what the caller gets.
#[test]
fn a_destructor_panic_when_the_coroutine_panics_is_reported_then_dropped() {
    let hooks = count_hook_calls();
    let log = Log::default();
    let l = log.clone();
    let mut co = Coroutine::<(), (), ()>::new(move |_, ()| {
        ID.set(2);
        LAZY_SLOT.set(Some(Tracked::armed(20, &l)));
        CONST_SLOT.set(Some(Tracked::new(21, &l)));
        // Not through the hook: only the destructor's panic is counted.
        panic::resume_unwind(Box::new("the closure's own panic"));
    });
    let payload = catch(|| co.resume(())).unwrap_err();
    assert_eq!(message(&*payload), "the closure's own panic");
    assert_eq!(
        hook_calls() - hooks,
        1,
        "the destructor's panic was reported"
    );
    assert_eq!(sorted(&log), [(20, 2), (21, 2)]);
    assert!(co.done());
    assert_eq!(ID.get(), 0);
}

/// Documented on `Coroutine`'s drop: the stack is unwound, then the
/// co_local values are destroyed; a panic "comes out of the drop, unless
/// the thread is already panicking". Values on the stack go first, then the
/// block's, each once, with the coroutine's block current.
#[test]
fn a_destructor_panic_when_dropped_suspended_comes_out_of_drop() {
    let log = Log::default();
    let l = log.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        ID.set(3);
        let _on_stack = Tracked::new(30, &l);
        CONST_SLOT.set(Some(Tracked::armed(31, &l)));
        LAZY_SLOT.set(Some(Tracked::new(32, &l)));
        y.suspend(());
        unreachable!("dropped while suspended");
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(()));
    let payload = catch(move || drop(co)).unwrap_err();
    assert_eq!(message(&*payload), "boom 31");
    let drops = log.lock().unwrap().clone();
    assert_eq!(drops[0], (30, 3), "the stack is unwound first");
    assert_eq!(sorted(&log), [(30, 3), (31, 3), (32, 3)]);
    assert_eq!(ID.get(), 0);

    // The same for a coroutine dropped before it started, with seeded values.
    let l = log.clone();
    let mut seeded = Coroutine::new(|_: &Yielder<(), ()>, ()| unreachable!());
    seeded.with_locals(|| {
        ID.set(4);
        LAZY_SLOT.set(Some(Tracked::armed(40, &l)));
    });
    let payload = catch(move || drop(seeded)).unwrap_err();
    assert_eq!(message(&*payload), "boom 40");
    assert_eq!(sorted(&log), [(40, 4)]);
}

/// A coroutine dropped while its thread is already panicking: the
/// destructor's panic is reported by the hook and dropped (resuming it would
/// abort); the original panic goes on.
#[test]
fn a_destructor_panic_while_the_thread_panics_does_not_abort() {
    let hooks = count_hook_calls();
    let log = Log::default();
    let l = log.clone();
    let result = catch(move || {
        let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
            ID.set(5);
            let _on_stack = Tracked::new(50, &l);
            CONST_SLOT.set(Some(Tracked::armed(51, &l)));
            y.suspend(());
        });
        co.resume(());
        panic::resume_unwind(Box::new("the outer panic"));
    });
    assert_eq!(message(&*result.unwrap_err()), "the outer panic");
    assert_eq!(hook_calls() - hooks, 1);
    assert_eq!(sorted(&log), [(50, 5), (51, 5)]);
}

// ---------------------------------------------------------------------------
// 2. A panic during the forced unwinding of a dropped coroutine: an abort
//    by design, so in a child process.

/// The environment variable that selects a scenario in the child process.
const CHILD_SCENARIO: &str = "RELIABILITY_FAULTS_CHILD";

/// In the parent, runs this test binary on `test` alone with `scenario`
/// selected, and returns how it ended. In the child (`scenario` selected),
/// runs `body`, which should not return, and returns `None`.
fn in_child(test: &str, scenario: &str, body: impl FnOnce()) -> Option<std::process::Output> {
    if std::env::var(CHILD_SCENARIO).as_deref() == Ok(scenario) {
        body();
        eprintln!("scenario {scenario}: returned");
        return None;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_SCENARIO, scenario)
        .output()
        .unwrap();
    Some(output)
}

/// Checks that the child was killed by `SIGABRT` after printing `expected`.
fn assert_aborted(output: &std::process::Output, expected: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(6),
        "the child should abort; it ended with {:?}:\n{stderr}",
        output.status
    );
    for text in expected {
        assert!(stderr.contains(text), "no {text:?} in:\n{stderr}");
    }
}

/// A destructor on the stack of a coroutine being dropped panics: the panic
/// escapes a destructor called while unwinding (the forced unwind is a
/// panic), which Rust turns into an abort ("panic in a destructor during
/// cleanup"), as it does on any thread. co_runtime does not document this.
#[test]
fn a_panic_during_the_forced_unwind_aborts_the_process() {
    let output = in_child(
        "a_panic_during_the_forced_unwind_aborts_the_process",
        "panic-in-unwind",
        || {
            let log = Log::default();
            let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
                let _bomb = Tracked::armed(60, &log);
                y.suspend(());
            });
            co.resume(());
            drop(co);
        },
    );
    if let Some(output) = output {
        assert_aborted(
            &output,
            &["boom 60", "panic in a destructor during cleanup"],
        );
    }
}

/// A destructor on the stack of a coroutine being dropped calls `suspend`:
/// documented ("if it calls `suspend` again, that call panics"), and that
/// panic escapes a destructor during unwinding: an abort, as above.
#[test]
fn suspending_during_the_forced_unwind_aborts_the_process() {
    struct SuspendOnDrop<'a>(&'a Yielder<(), ()>);
    impl Drop for SuspendOnDrop<'_> {
        fn drop(&mut self) {
            self.0.suspend(());
        }
    }
    let output = in_child(
        "suspending_during_the_forced_unwind_aborts_the_process",
        "suspend-in-unwind",
        || {
            let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
                let _guard = SuspendOnDrop(y);
                y.suspend(());
            });
            co.resume(());
            drop(co);
        },
    );
    if let Some(output) = output {
        assert_aborted(
            &output,
            &[
                "a coroutine that is being dropped cannot suspend",
                "panic in a destructor during cleanup",
            ],
        );
    }
}

/// The closure catches the forced unwind of its drop and panics with a
/// payload of its own: documented in part ("Code that catches it should let
/// it go on"); the code (`RawCoroutine`'s drop) resumes that panic out of
/// the drop, after the coroutine's values have been destroyed.
#[test]
fn a_closure_that_turns_its_forced_unwind_into_a_panic_panics_out_of_drop() {
    let log = Log::default();
    let l = log.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        ID.set(8);
        LAZY_SLOT.set(Some(Tracked::new(80, &l)));
        let unwound = catch(|| y.suspend(()));
        assert!(unwound.is_err());
        panic::resume_unwind(Box::new("instead of the forced unwind"));
    });
    co.resume(());
    let payload = catch(move || drop(co)).unwrap_err();
    assert_eq!(message(&*payload), "instead of the forced unwind");
    assert_eq!(sorted(&log), [(80, 8)]);
}

/// A coroutine suspends from a destructor while it unwinds from its own
/// panic (nothing forbids it: its panic is in flight, not a forced unwind).
/// std counts panics per thread, so `std::thread::panicking()` is then true
/// in its resumer, which is not unwinding; co_local's block destruction and
/// co_runtime's drop read it to decide whether to resume a destructor's
/// panic, so such a panic is reported by the hook and dropped there instead
/// of coming out of the drop. Resuming the coroutine lets its unwinding go
/// on: its panic comes out of `resume`. Not UB, but undocumented and
/// surprising; corosensei behaves the same.
#[test]
fn a_coroutine_suspended_while_it_unwinds_makes_its_resumer_look_panicking() {
    struct SuspendOnDrop<'a>(&'a Yielder<(), u32>);
    impl Drop for SuspendOnDrop<'_> {
        fn drop(&mut self) {
            self.0.suspend(1);
        }
    }
    let hooks = count_hook_calls();
    let log = Log::default();
    let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| {
        let _suspends = SuspendOnDrop(y);
        panic::resume_unwind(Box::new("the coroutine's panic"));
    });
    assert!(!std::thread::panicking());
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert!(std::thread::panicking(), "the coroutine's panic is counted");

    let mut locals = co_local::Locals::new();
    locals.enter(|| CONST_SLOT.set(Some(Tracked::armed(70, &log))));
    let dropped = catch(move || drop(locals));
    assert!(dropped.is_ok(), "the destructor's panic did not come out");
    assert_eq!(hook_calls() - hooks, 1, "it was reported");
    assert_eq!(sorted(&log), [(70, 0)]);

    let payload = catch(|| co.resume(())).unwrap_err();
    assert_eq!(message(&*payload), "the coroutine's panic");
    assert!(!std::thread::panicking());
    assert!(co.done());
}

// ---------------------------------------------------------------------------
// 3. A thread exits while it holds suspended coroutines.

std::thread_local! {
    static HELD: RefCell<Vec<Coroutine<(), (), ()>>> = const { RefCell::new(Vec::new()) };
}

co_local! {
    /// A coroutine kept in a coroutine-local value (of the thread's own
    /// block, or of another coroutine's).
    static CHILD: RefCell<Option<Coroutine<(), (), ()>>> = const { RefCell::new(None) };
}

/// A coroutine with id `id` that holds a value on its stack (`id * 10`) and
/// in its block (`id * 10 + 1`), and, if `nested`, a suspended coroutine
/// `id + 1` of its own on its stack; it suspends once.
fn holder(id: u32, log: &Log, nested: bool) -> Coroutine<(), (), ()> {
    let log = log.clone();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        ID.set(id);
        let _on_stack = Tracked::new(id * 10, &log);
        LAZY_SLOT.set(Some(Tracked::new(id * 10 + 1, &log)));
        // Made and resumed once: suspended on this coroutine's stack.
        let _inner = nested.then(|| holder(id + 1, &log, false));
        y.suspend(());
        unreachable!("dropped while suspended");
    });
    co.resume(());
    co
}

/// What `holder(id, _, true)` drops: both coroutines' stack and block values,
/// each with its own block current.
fn holder_drops(id: u32) -> Vec<(u32, u32)> {
    let inner = id + 1;
    vec![
        (id * 10, id),
        (id * 10 + 1, id),
        (inner * 10, inner),
        (inner * 10 + 1, inner),
    ]
}

/// Runs `f` on a thread, and returns what it logged once it had exited.
fn on_thread(f: impl FnOnce(&Log) + Send + 'static) -> Vec<(u32, u32)> {
    let log = Log::default();
    let l = log.clone();
    std::thread::spawn(move || f(&l)).join().unwrap();
    sorted(&log)
}

/// SPEC: "Dropping a coroutine or a Locals from anywhere is fine, including
/// from another thread-local's destructor while its thread exits." Here the
/// thread-local is made before anything of co_runtime, so that its
/// destructor runs after co_runtime's marker is gone: the thread-locals are
/// being destroyed, and frames on a suspended coroutine's stack may refer to
/// some that are gone. So the coroutines are leaked, not unwound: values on
/// their stacks (and the nested coroutine with its block) are never
/// dropped, their stacks never unmapped; their own blocks are destroyed,
/// each value once, with the block current.
#[test]
fn coroutines_in_a_thread_local_made_first_are_leaked_at_thread_exit() {
    let drops = on_thread(|log| {
        HELD.with_borrow(|held| assert!(held.is_empty()));
        ID.set(100);
        let first = holder(1, log, true);
        let second = holder(3, log, false);
        HELD.with_borrow_mut(|held| held.extend([first, second]));
    });
    assert_eq!(drops, [(11, 1), (31, 3)]);
}

/// The same with the thread-local made last, so that its destructor can run
/// before co_local's and co_runtime's.
#[test]
fn coroutines_in_a_thread_local_made_last_are_dropped_at_thread_exit() {
    let drops = on_thread(|log| {
        ID.set(100);
        let first = holder(1, log, true);
        HELD.with_borrow_mut(|held| held.push(first));
    });
    assert_eq!(drops, holder_drops(1));
}

/// A suspended coroutine kept in a value of the thread's own co_local block
/// is dropped when that block is destroyed at thread exit. The block was
/// made before the thread's first coroutine, so this happens after
/// co_runtime's marker is gone: as above, the coroutine is leaked, not
/// unwound, and only its block's values (and the thread block's) are
/// destroyed.
#[test]
fn a_coroutine_in_the_threads_own_block_is_leaked_at_thread_exit() {
    let drops = on_thread(|log| {
        ID.set(100);
        CONST_SLOT.set(Some(Tracked::new(1000, log)));
        let co = holder(1, log, true);
        CHILD.set(Some(co));
    });
    assert_eq!(drops, [(11, 1), (1000, 100)]);
}

/// A thread that panics with suspended coroutines on its stack: they are
/// dropped while it unwinds (a panicking co_local destructor among them is
/// reported and dropped), and `join` gets the thread's own payload.
#[test]
fn a_thread_panicking_with_coroutines_on_its_stack_drops_them() {
    let log = Log::default();
    let l = log.clone();
    let result = std::thread::spawn(move || {
        let _first = holder(1, &l, true);
        let mut second = holder(3, &l, false);
        second.with_locals(|| CONST_SLOT.set(Some(Tracked::armed(32, &l))));
        panic::resume_unwind(Box::new("the thread's panic"));
    })
    .join();
    assert_eq!(message(&*result.unwrap_err()), "the thread's panic");
    let mut expected = holder_drops(1);
    expected.extend([(30, 3), (31, 3), (32, 3)]);
    expected.sort_unstable();
    assert_eq!(sorted(&log), expected);
}

/// A suspended coroutine kept in a co_local value of another coroutine is
/// dropped when that one finishes: unwound from a destructor that runs while
/// the parent's block is being destroyed, with its own block current.
#[test]
fn a_coroutine_in_another_coroutines_block_is_dropped_with_it() {
    let log = Log::default();
    let l = log.clone();
    let mut parent = Coroutine::<(), (), ()>::new(move |_, ()| {
        ID.set(7);
        CHILD.set(Some(holder(8, &l, false)));
        LAZY_SLOT.set(Some(Tracked::new(70, &l)));
    });
    assert_eq!(parent.resume(()), CoroutineResult::Return(()));
    assert_eq!(sorted(&log), [(70, 7), (80, 8), (81, 8)]);
    assert_eq!(ID.get(), 0);
}

/// A coroutine in a thread-local whose co_local value's destructor panics
/// at thread exit: the panic comes out of the coroutine's drop (as
/// documented), so out of the thread-local's destructor, and std aborts the
/// process ("thread local panicked on drop"), as it does for any
/// thread-local whose destructor panics.
#[test]
fn a_destructor_panic_of_a_coroutine_dropped_at_thread_exit_aborts() {
    let output = in_child(
        "a_destructor_panic_of_a_coroutine_dropped_at_thread_exit_aborts",
        "panic-at-thread-exit",
        || {
            std::thread::spawn(|| {
                let log = Log::default();
                let mut co = holder(1, &log, false);
                co.with_locals(|| CONST_SLOT.set(Some(Tracked::armed(90, &log))));
                HELD.with_borrow_mut(|held| held.push(co));
            })
            .join()
            .unwrap();
        },
    );
    if let Some(output) = output {
        assert_aborted(&output, &["boom 90", "thread local panicked on drop"]);
    }
}

/// The same for a value of the thread's own co_local block, as for a
/// `std::thread_local!` value whose destructor panics.
#[test]
fn a_destructor_panic_in_the_threads_own_block_at_exit_aborts() {
    let output = in_child(
        "a_destructor_panic_in_the_threads_own_block_at_exit_aborts",
        "panic-in-thread-block",
        || {
            std::thread::spawn(|| {
                let log = Log::default();
                CONST_SLOT.set(Some(Tracked::armed(91, &log)));
            })
            .join()
            .unwrap();
        },
    );
    if let Some(output) = output {
        assert_aborted(&output, &["boom 91", "thread local panicked on drop"]);
    }
}

// ---------------------------------------------------------------------------
// 4. A lazy initialiser suspends its coroutine.

scoped_tls::scoped_thread_local! {
    /// The yielder of the coroutine whose lazy initialiser may suspend. Set
    /// around one access at a time, by one coroutine at a time: scoped
    /// thread-locals nest like calls, which interleaved coroutines do not.
    static YIELDER: Yielder<(), u32>
}

std::thread_local! {
    static INIT_LOG: RefCell<Option<Log>> = const { RefCell::new(None) };
    static INIT_RUNS: Cell<u32> = const { Cell::new(0) };
}

co_local! {
    /// Whether `SLOW`'s initialiser suspends its coroutine (once).
    static SUSPEND_IN_INIT: Cell<bool> = const { Cell::new(false) };
    /// A lazy value whose initialiser makes part of the value, may suspend
    /// the coroutine, and then makes the value.
    static SLOW: RefCell<Vec<Tracked>> = slow_init();
    /// Reports, while its block is destroyed, whether `SLOW` is reachable.
    static PROBE: RefCell<Option<Probe>> = const { RefCell::new(None) };
}

fn slow_init() -> RefCell<Vec<Tracked>> {
    INIT_RUNS.set(INIT_RUNS.get() + 1);
    let log = INIT_LOG.with_borrow(|log| log.clone().unwrap());
    let partial = Tracked::new(200 + INIT_RUNS.get(), &log);
    if SUSPEND_IN_INIT.replace(false) {
        YIELDER.with(|y| y.suspend(1));
    }
    RefCell::new(vec![partial])
}

struct Probe(Rc<Cell<Option<Result<usize, AccessError>>>>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.set(Some(SLOW.try_with(|v| v.borrow().len())));
    }
}

/// A coroutine that reads `SLOW`, whose initialiser suspends it once if
/// `suspend`, and returns its tags.
fn slow_reader(id: u32, suspend: bool) -> Coroutine<(), u32, Vec<u32>> {
    Coroutine::new(move |y: &Yielder<(), u32>, ()| {
        ID.set(id);
        SUSPEND_IN_INIT.set(suspend);
        YIELDER.set(y, || {
            SLOW.with_borrow(|v| v.iter().map(|t| t.tag).collect::<Vec<_>>())
        })
    })
}

fn init_log() -> Log {
    let log = Log::default();
    INIT_LOG.set(Some(log.clone()));
    INIT_RUNS.set(0);
    log
}

/// Dropped while suspended inside the initialiser: the unwound initialiser
/// made nothing (what it had made so far is dropped by the unwinding, once).
/// A destructor that reaches the value during the block's destruction makes
/// it, running the initialiser again (as std makes a thread-local reached
/// during thread exit), and it is destroyed right after. The block goes back
/// clean: the next coroutine runs the initialiser again.
#[test]
fn a_coroutine_dropped_inside_a_lazy_initialiser_leaves_the_value_unmade() {
    let log = init_log();
    let probe = Rc::new(Cell::new(None));
    let mut co = slow_reader(1, true);
    let p = probe.clone();
    co.with_locals(|| PROBE.set(Some(Probe(p))));
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(INIT_RUNS.get(), 1);
    drop(co);
    assert_eq!(
        sorted(&log),
        [(201, 1), (202, 1)],
        "the partial value, by the unwind; the value the destruction made"
    );
    assert_eq!(probe.take(), Some(Ok(1)), "made during destruction");
    assert_eq!(INIT_RUNS.get(), 2, "run again by the destruction");
    assert!(!YIELDER.is_set(), "the unwinding left the scope");

    let mut next = Coroutine::new(|_: &Yielder<(), ()>, ()| {
        ID.set(2);
        SLOW.with_borrow(|v| v.iter().map(|t| t.tag).collect::<Vec<_>>())
    });
    assert_eq!(next.resume(()), CoroutineResult::Return(vec![203]));
    assert_eq!(sorted(&log), [(203, 2)]);
}

/// Resumed instead, the initialiser finishes and the value is made once.
#[test]
fn a_lazy_initialiser_may_suspend_its_coroutine() {
    let log = init_log();
    let mut co = slow_reader(3, true);
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(INIT_RUNS.get(), 1);
    // Another coroutine's block is another value: it is made meanwhile (its
    // initialiser does not suspend: one at a time, see `YIELDER`).
    let mut other = slow_reader(4, false);
    assert_eq!(other.resume(()), CoroutineResult::Return(vec![202]));
    assert_eq!(co.resume(()), CoroutineResult::Return(vec![201]));
    assert_eq!(sorted(&log), [(201, 3), (202, 4)]);
}

/// While a coroutine is suspended inside `SLOW`'s initialiser, the value is
/// still not made in its block, so `with_locals` can make it (`set`, or an
/// access that runs the initialiser again). When the first initialiser
/// returns, the value made meanwhile stays (a reference to it may be alive)
/// and the initialiser's late value is dropped.
#[test]
fn a_value_made_while_its_initialiser_is_suspended_stays() {
    let log = init_log();
    let mut co = slow_reader(5, true);
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    let l = log.clone();
    co.with_locals(|| SLOW.set(vec![Tracked::new(250, &l)]));
    assert_eq!(
        co.with_locals(|| SLOW.with_borrow(|v| v[0].tag)),
        Some(250),
        "seeded while the initialiser is suspended"
    );
    assert_eq!(co.resume(()), CoroutineResult::Return(vec![250]));
    // 201 was dropped when the initialiser returned late, then 250 when the
    // coroutine finished.
    assert_eq!(sorted(&log), [(201, 5), (250, 5)]);

    // The same with an access that runs the initialiser from outside.
    let mut co = slow_reader(6, true);
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(co.with_locals(|| SLOW.with_borrow(|v| v[0].tag)), Some(203));
    assert_eq!(INIT_RUNS.get(), 3);
    assert_eq!(co.resume(()), CoroutineResult::Return(vec![203]));
    assert_eq!(sorted(&log), [(202, 6), (203, 6)]);
}

// ---------------------------------------------------------------------------
// 5. A `with` closure suspends while the same key is reached from elsewhere.

co_local! {
    static SHARED: RefCell<Vec<u32>> = RefCell::new(Vec::new());
    static COUNT: Cell<u32> = const { Cell::new(0) };
}

/// `with` hands out a reference that stays valid while the coroutine is
/// suspended (SPEC, "Accessing"). Other coroutines and the thread reach
/// their own values; `with_locals` reaches the suspended coroutine's very
/// value, and changes through `Cell` show through the held reference.
#[test]
fn a_held_reference_sees_changes_made_through_with_locals() {
    let mut co = Coroutine::new(|y: &Yielder<(), u32>, ()| {
        COUNT.with(|count| {
            count.set(1);
            y.suspend(count.get());
            let seen = count.get();
            count.set(seen + 1);
            seen
        })
    });
    let mut other = Coroutine::new(|_: &Yielder<(), u32>, ()| {
        COUNT.set(COUNT.get() + 100);
        COUNT.get()
    });
    assert_eq!(co.resume(()), CoroutineResult::Yield(1));
    assert_eq!(other.resume(()), CoroutineResult::Return(100));
    COUNT.set(1000);
    assert_eq!(co.with_locals(|| COUNT.replace(7)), Some(1));
    assert_eq!(co.resume(()), CoroutineResult::Return(7));
    assert_eq!(COUNT.get(), 1000);
}

/// A coroutine suspends inside `with_borrow_mut`: its `RefCell` stays
/// mutably borrowed while it is suspended. Another coroutine's `SHARED` is
/// another cell; but `with_locals` reaches the borrowed one, so a borrow
/// there panics (RefCell's documented outcome), the panic comes out of
/// `with_locals` with the caller's block current again, and the suspended
/// coroutine's borrow is unharmed.
#[test]
fn a_borrow_held_across_a_suspension_makes_other_borrows_of_that_value_panic() {
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        SHARED.with_borrow_mut(|v| {
            v.push(1);
            let data = v.as_ptr();
            y.suspend(());
            assert_eq!(v.as_ptr(), data);
            v.push(2);
        });
        SHARED.take()
    });
    let mut other = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        SHARED.with_borrow_mut(|v| {
            v.push(10);
            y.suspend(());
            v.push(11);
        });
        SHARED.take()
    });
    co.resume(());
    other.resume(());
    SHARED.with_borrow_mut(|v| v.push(100));

    let hooks = count_hook_calls();
    let borrow = catch(|| co.with_locals(|| SHARED.with_borrow(Vec::len))).unwrap_err();
    assert!(
        message(&*borrow).contains("borrowed"),
        "{}",
        message(&*borrow)
    );
    let set = catch(|| co.with_locals(|| SHARED.set(vec![5]))).unwrap_err();
    assert!(message(&*set).contains("borrowed"), "{}", message(&*set));
    assert_eq!(hook_calls() - hooks, 2);
    // `try_with` reaches the value (it is alive), only the borrow fails.
    assert_eq!(
        co.with_locals(|| SHARED.try_with(|cell| cell.try_borrow().is_err())),
        Some(Ok(true))
    );
    SHARED.with_borrow(|v| assert_eq!(*v, [100]));

    assert_eq!(other.resume(()), CoroutineResult::Return(vec![10, 11]));
    assert_eq!(co.resume(()), CoroutineResult::Return(vec![1, 2]));
    SHARED.with_borrow(|v| assert_eq!(*v, [100]));
}
