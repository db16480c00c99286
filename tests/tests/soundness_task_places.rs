//! A task block keeps its place: wherever a checked restore names the block
//! of a `WithLocals` task that is still reachable — attached to this thread,
//! enclosing the attached one, or dying with its destructors running — that
//! block is put back, never the thread's own. Each test makes a restore
//! happen after some block died (so that it is checked), with the task block
//! in one of those places; each reads the task's value after it, and the
//! thread's value outside. `.ci/run` runs them under valgrind's memcheck.

use std::cell::{Cell, RefCell};
use std::future::{pending, poll_fn};
use std::rc::Rc;
use std::task::Poll;

use co_local::{co_local, Locals, WithLocals};
use co_local_tests::poll_once;
use corosensei::{Coroutine, CoroutineResult, Yielder};

co_local! {
    static ID: Cell<u32> = const { Cell::new(0) };
    static GUARD: RefCell<Option<Guard>> = const { RefCell::new(None) };
    static PROBES: RefCell<Vec<Probe>> = const { RefCell::new(Vec::new()) };
}

/// Makes a block die while it is dropped: a scratch `Locals`, entered and
/// dropped, so that every restore pending on this thread is checked.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        a_block_dies();
    }
}

fn a_block_dies() {
    co_local_tests::a_block_dies(|| ID.set(99));
}

/// A block dies inside a scope begun here: the scope's end checks the block
/// it puts back, which is the current one.
fn a_block_dies_inside_a_scope() {
    let mut scope = Locals::new();
    scope.enter(a_block_dies);
}

thread_local! {
    /// What each `Probe` read when it was dropped.
    static SEEN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Records `ID` as its destructor sees it, after an `enter` inside which a
/// block dies.
struct Probe;

impl Drop for Probe {
    fn drop(&mut self) {
        let mut a = Locals::new();
        let b = Locals::new();
        a.enter(|| drop(b));
        SEEN.with_borrow_mut(|seen| seen.push(ID.get()));
    }
}

#[test]
fn a_task_finds_its_block_after_a_coroutine_suspends_inside_another_task_poll() {
    ID.set(1);
    // A coroutine that polls a second task S, and suspends inside S's poll
    // after a block died there.
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let mut s = WithLocals::new(poll_fn(|_| {
            ID.set(2);
            a_block_dies();
            y.suspend(());
            Poll::Ready(ID.get())
        }));
        poll_once(&mut s)
    });
    let mut locals = Locals::new();
    let (co_ref, locals_ref) = (&mut co, &mut locals);
    let mut t = WithLocals::new(poll_fn(move |_| {
        ID.set(7);
        let first = locals_ref.resume(|| co_ref.resume(()));
        assert!(matches!(first, CoroutineResult::Yield(())));
        let seen = ID.get();
        ID.set(8);
        Poll::Ready((seen, ID.get()))
    }));
    assert_eq!(poll_once(&mut t), Poll::Ready((7, 8)));
    // Nothing the task wrote reached the thread's own block.
    assert_eq!(ID.get(), 1);
    drop(t);
    // S's poll goes on with S's block, which the coroutine left current.
    assert_eq!(
        locals.resume(|| co.resume(())),
        CoroutineResult::Return(Poll::Ready(2))
    );
    assert_eq!(ID.get(), 1);
}

#[test]
fn a_task_finds_its_block_after_a_sub_task_completes_and_its_destructor_drops_a_block() {
    ID.set(1);
    let mut t = Box::pin(WithLocals::new(async {
        ID.set(7);
        WithLocals::new(async { GUARD.set(Some(Guard)) }).await;
        let seen = ID.get();
        ID.set(8);
        (seen, ID.get())
    }));
    assert_eq!(poll_once(&mut t), Poll::Ready((7, 8)));
    assert_eq!(ID.get(), 1);
}

#[test]
fn a_task_finds_its_block_after_a_pending_sub_task_is_dropped() {
    ID.set(1);
    let mut t = Box::pin(WithLocals::new(async {
        ID.set(7);
        // The losing branch of a `select!`: polled once, then dropped.
        let mut loser = Box::pin(WithLocals::new(async {
            GUARD.set(Some(Guard));
            pending::<()>().await;
        }));
        assert_eq!(poll_once(&mut loser), Poll::Pending);
        drop(loser);
        let seen = ID.get();
        ID.set(8);
        (seen, ID.get())
    }));
    assert_eq!(poll_once(&mut t), Poll::Ready((7, 8)));
    assert_eq!(ID.get(), 1);
}

#[test]
fn nested_sub_tasks_each_find_their_block_after_the_innermost_dies() {
    ID.set(1);
    let mut t = Box::pin(WithLocals::new(async {
        ID.set(7);
        let middle = WithLocals::new(async {
            ID.set(5);
            WithLocals::new(async { GUARD.set(Some(Guard)) }).await;
            ID.get()
        })
        .await;
        (middle, ID.get())
    }));
    assert_eq!(poll_once(&mut t), Poll::Ready((5, 7)));
    assert_eq!(ID.get(), 1);
}

#[test]
fn a_task_call_that_ends_before_the_call_it_encloses_keeps_its_block_next_time() {
    ID.set(1);
    // A coroutine that polls a task T2 and suspends inside T2's poll; the
    // next resume ends that poll.
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let mut t2 = WithLocals::new(poll_fn(|_| {
            y.suspend(());
            Poll::Ready(ID.get())
        }));
        t2.with_locals(|| ID.set(2));
        poll_once(&mut t2)
    });
    let mut locals = Locals::new();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut polls = 0;
    let mut t1 = {
        let seen = Rc::clone(&seen);
        let co = &mut co;
        WithLocals::new(poll_fn(move |_| {
            polls += 1;
            let answer = locals.resume(|| co.resume(()));
            seen.borrow_mut().push(ID.get());
            ID.set(ID.get() + 1);
            match answer {
                CoroutineResult::Yield(()) => Poll::Pending,
                CoroutineResult::Return(t2) => Poll::Ready((polls, t2)),
            }
        }))
    };
    t1.with_locals(|| ID.set(7));
    assert_eq!(poll_once(&mut t1), Poll::Pending);
    // T1's first call ended while T2's (inside the coroutine) goes on; its
    // second call resumes the coroutine, and T2's call ends inside it.
    assert_eq!(poll_once(&mut t1), Poll::Ready((2, Poll::Ready(2))));
    assert_eq!(*seen.borrow(), [7, 8]);
    assert_eq!(ID.get(), 1);
}

#[test]
fn an_orphaned_task_block_is_current_while_its_destructors_run() {
    ID.set(1);
    SEEN.with_borrow_mut(Vec::clear);
    // Resumed without `Locals::resume`: it runs in the task's block, and
    // suspends with a reference into it.
    let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        ID.with(|_| y.suspend(()));
    });
    {
        let co = &mut co;
        let mut t = WithLocals::new(poll_fn(move |_| {
            ID.set(7);
            PROBES.with_borrow_mut(|p| p.extend([Probe, Probe]));
            assert!(matches!(co.resume(()), CoroutineResult::Yield(())));
            Poll::Ready(())
        }));
        assert_eq!(poll_once(&mut t), Poll::Ready(()));
    }
    // The task is gone; its first block, still pinned by the coroutine, was
    // left behind as an orphan. The pin goes now, and its values die.
    assert!(matches!(co.resume(()), CoroutineResult::Return(())));
    assert_eq!(SEEN.with_borrow(Vec::clone), [7, 7]);
    assert_eq!(ID.get(), 1);
}

// --- Found by review: places where a block was in no live set and not linked. ---

/// A task's copy of `COPIED` (made when the task is made) records, when it
/// dies, the `ID` its block shows after a scope inside which a block dies.
/// The copy made second panics, so the half-made task block is destroyed
/// at once.
struct Copied(bool);

static COPIES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Clone for Copied {
    fn clone(&self) -> Self {
        if COPIES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2 == 1 {
            panic!("the second copy fails");
        }
        Copied(true)
    }
}

impl Drop for Copied {
    fn drop(&mut self) {
        if self.0 {
            ID.set(42);
            a_block_dies_inside_a_scope();
            SEEN.with_borrow_mut(|seen| seen.push(ID.get()));
        }
    }
}

co_local! {
    #[inherit]
    static COPIED_FIRST: Copied = Copied(false);
    #[inherit]
    static COPIED_SECOND: Copied = Copied(false);
}

#[test]
fn a_task_block_whose_inherited_copy_panicked_dies_current() {
    ID.set(1);
    SEEN.with_borrow_mut(Vec::clear);
    COPIED_FIRST.with(|_| ());
    COPIED_SECOND.with(|_| ());
    COPIES.store(0, std::sync::atomic::Ordering::SeqCst);
    let made = std::panic::catch_unwind(|| drop(WithLocals::new(std::future::ready(()))));
    assert!(made.is_err());
    // The first copy died with the half-made task block current, after a
    // scope in which a block died.
    assert_eq!(SEEN.with_borrow(Vec::clone), [42]);
    assert_eq!(ID.get(), 1);
}

/// Keeps a `Locals` in a thread-local of std made before co_local's own on
/// its thread: dropped last at thread exit, when co_local's set of live
/// blocks is gone.
struct Keeper(Option<Locals>);

std::thread_local! {
    static KEEPER: RefCell<Keeper> = const { RefCell::new(Keeper(None)) };
}

static AT_EXIT: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// Records the `ID` of its block after a scope in which a block dies.
struct ExitProbe;

impl Drop for ExitProbe {
    fn drop(&mut self) {
        ID.set(42);
        a_block_dies_inside_a_scope();
        AT_EXIT.lock().unwrap().push(ID.get());
    }
}

co_local! {
    static EXIT_PROBE: RefCell<Option<ExitProbe>> = const { RefCell::new(None) };
}

#[test]
fn a_locals_dropped_last_at_thread_exit_is_current_while_it_dies() {
    AT_EXIT.lock().unwrap().clear();
    std::thread::spawn(|| {
        KEEPER.with(|_| ()); // registered before co_local's thread-locals
        let mut block = Locals::new();
        block.enter(|| EXIT_PROBE.set(Some(ExitProbe)));
        KEEPER.with_borrow_mut(|k| k.0 = Some(block));
    })
    .join()
    .unwrap();
    assert_eq!(*AT_EXIT.lock().unwrap(), [42]);
}
