//! What `Locals::resume` remembers between two switches: the block its
//! coroutine left current when it suspended (inside an `enter` of its own,
//! or inside a poll of a task wrapper). `resume` makes that block current
//! again without checking it, so every way such a block can die or leave
//! the thread must first send the `Locals` back to its own block. Each test
//! ends one of those ways; `.ci/run` runs them under valgrind's memcheck.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use co_local::{co_local, Locals, WithLocals};
use co_local_tests::poll_once;
use corosensei::{Coroutine, CoroutineResult, Yielder};

mod common;

use common::{churn, ID, NAME};

/// A corosensei coroutine with a block of its own, switched with `resume`.
struct Task<Y> {
    co: Coroutine<(), Y, u32>,
    locals: Locals,
}

impl<Y: 'static> Task<Y> {
    fn new(f: impl FnOnce(&Yielder<(), Y>, ()) -> u32 + 'static) -> Self {
        let mut locals = Locals::new();
        locals.enter(|| ID.set(1));
        Task {
            co: Coroutine::new(f),
            locals,
        }
    }

    fn resume(&mut self) -> CoroutineResult<Y, u32> {
        let co = &mut self.co;
        self.locals.resume(|| co.resume(()))
    }
}

/// A coroutine that suspends inside an `enter` of a block it owns.
fn suspended_in_enter() -> Task<()> {
    let mut task = Task::new(|y: &Yielder<(), ()>, ()| {
        let mut nested = Locals::new();
        nested.enter(|| {
            ID.set(2);
            NAME.set(String::from("nested"));
            y.suspend(());
            ID.get()
        })
    });
    assert!(matches!(task.resume(), CoroutineResult::Yield(())));
    task
}

#[test]
fn a_locals_dropped_while_it_remembers_a_block_lets_go_of_it() {
    let task = suspended_in_enter();
    let Task { co, locals } = task;
    // The `Locals` goes first; the remembered block then dies with the
    // coroutine's stack.
    drop(locals);
    let others = churn();
    drop(co);
    let mut after = Locals::new();
    assert_eq!(after.resume(|| ID.get()), 0);
    drop(others);
}

#[test]
fn a_remembered_block_that_dies_outside_resume_is_forgotten() {
    let task = suspended_in_enter();
    let Task { co, mut locals } = task;
    // Unwound with the caller's block current: the nested block dies while
    // `locals` still names it.
    drop(co);
    let others = churn();
    assert_eq!(locals.resume(|| ID.get()), 1);
    assert_eq!(locals.resume(|| NAME.take()), "fresh");
    drop(others);
}

#[test]
fn a_remembered_block_that_dies_inside_resume_is_forgotten() {
    let task = suspended_in_enter();
    let Task { co, mut locals } = task;
    // Unwound inside `resume`: the remembered block is current while the
    // coroutine's stack unwinds, then dies.
    locals.resume(|| drop(co));
    let others = churn();
    assert_eq!(locals.resume(|| ID.get()), 1);
    drop(others);
}

/// A task whose first poll suspends the coroutine that `y` belongs to,
/// yielding the task's `ID`, seeded to `id`; then it is ready with its `ID`.
fn task_that_suspends(
    y: &Yielder<(), u32>,
    id: u32,
) -> WithLocals<Pin<Box<impl Future<Output = u32> + '_>>> {
    let mut task = WithLocals::new(Box::pin(poll_fn(move |_| {
        y.suspend(ID.get());
        Poll::Ready(ID.get())
    })));
    task.with_locals(|| ID.set(id)).unwrap();
    task
}

#[test]
fn a_coroutine_suspended_inside_a_task_poll_finds_the_task_block_again() {
    let mut task = Task::new(|y: &Yielder<(), u32>, ()| {
        let mut inner = task_that_suspends(y, 3);
        let seen = poll_once(&mut inner);
        assert_eq!(seen, Poll::Ready(3));
        // The task completed: its block is gone, the coroutine's is back.
        assert_eq!(inner.with_locals(|| ()), None);
        y.suspend(ID.get());
        ID.get()
    });
    ID.set(50);
    assert!(matches!(task.resume(), CoroutineResult::Yield(3)));
    assert_eq!(ID.get(), 50);
    let others = churn();
    assert!(matches!(task.resume(), CoroutineResult::Yield(1)));
    assert_eq!(ID.get(), 50);
    assert!(matches!(task.resume(), CoroutineResult::Return(1)));
    drop(others);
}

/// A coroutine suspended inside a poll of a task it owns, then dropped in
/// one of three orders.
fn suspended_in_poll() -> Task<u32> {
    let mut task = Task::new(|y: &Yielder<(), u32>, ()| {
        let mut inner = task_that_suspends(y, 4);
        match poll_once(&mut inner) {
            Poll::Ready(id) => id,
            Poll::Pending => 0,
        }
    });
    assert!(matches!(task.resume(), CoroutineResult::Yield(4)));
    task
}

#[test]
fn a_remembered_task_block_destroyed_by_an_unwind_inside_resume_is_forgotten() {
    let Task { co, mut locals } = suspended_in_poll();
    locals.resume(|| drop(co));
    let others = churn();
    assert_eq!(locals.resume(|| ID.get()), 1);
    drop(others);
}

#[test]
fn a_remembered_task_block_destroyed_by_an_unwind_outside_resume_is_forgotten() {
    let Task { co, mut locals } = suspended_in_poll();
    drop(co);
    let others = churn();
    assert_eq!(locals.resume(|| ID.get()), 1);
    drop(others);
}

#[test]
fn a_locals_dropped_while_it_remembers_a_task_block_lets_go_of_it() {
    let Task { co, locals } = suspended_in_poll();
    drop(locals);
    let others = churn();
    drop(co);
    drop(others);
}

#[test]
fn a_reset_lets_go_of_what_resume_remembered() {
    let Task { co, mut locals } = suspended_in_enter();
    // Reset while the coroutine is still suspended inside the nested block:
    // the fresh block is what the next `resume` makes current.
    locals.reset();
    assert_eq!(locals.resume(|| ID.get()), 0);
    drop(co);
    drop(locals);
}

#[test]
fn remembered_blocks_kept_in_thread_locals_at_thread_exit() {
    /// Coroutines suspended inside an `enter`, and inside a poll.
    type Kept = (Vec<Task<()>>, Vec<Task<u32>>);
    std::thread_local! {
        static KEPT: RefCell<Kept> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    std::thread::spawn(|| {
        // Some remember a block of their own (inside `enter`), the others a
        // task's block (inside a poll); the thread then exits with all of
        // them suspended, and destroys its thread-locals in its own order.
        for i in 0..8 {
            let name = format!("task {i}");
            if i % 2 == 0 {
                let mut task = suspended_in_enter();
                task.locals.enter(|| NAME.set(name));
                KEPT.with_borrow_mut(|k| k.0.push(task));
            } else {
                let mut task = suspended_in_poll();
                task.locals.enter(|| NAME.set(name));
                KEPT.with_borrow_mut(|k| k.1.push(task));
            }
        }
        ID.set(7);
    })
    .join()
    .unwrap();
}

/// Runs a closure when dropped: a destructor that does what a test needs.
struct OnDrop(Option<Box<dyn FnOnce()>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

co_local! {
    static HOOK: RefCell<Option<OnDrop>> = RefCell::new(None);
    static LAZY: Cell<u32> = Cell::new(0);
}

type Plain = Coroutine<(), (), ()>;

std::thread_local! {
    static STASH: RefCell<Option<(Locals, Plain, Plain)>> = const { RefCell::new(None) };
}

/// Runs inside a destructor of a dying block B, with B current: leaves B
/// pinned (so that its destruction stops and orphans it) and remembered by
/// a `Locals`.
fn pin_and_remember_the_dying_block() {
    let mut pinner: Plain = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        LAZY.with(|_| y.suspend(()));
    });
    pinner.resume(());
    let mut first = Locals::new();
    let mut second = Locals::new();
    let mut co: Plain = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        // Begun with B current; its restore puts B back in the next run.
        first.enter(|| y.suspend(()));
        second.enter(|| {});
        y.suspend(());
    });
    co.resume(());
    let mut holder = Locals::new();
    // The coroutine suspends with B current: `holder` remembers B.
    holder.resume(|| co.resume(()));
    STASH.with(|s| *s.borrow_mut() = Some((holder, co, pinner)));
}

#[test]
fn a_block_orphaned_by_its_own_destructors_is_not_remembered() {
    let mut dying = Locals::new();
    dying.enter(|| {
        LAZY.set(77);
        HOOK.set(Some(OnDrop(Some(Box::new(
            pin_and_remember_the_dying_block,
        )))));
    });
    drop(dying);
    let (mut holder, co, mut pinner) = STASH.with(|s| s.borrow_mut().take()).unwrap();
    // Never resumed again: its stack is leaked with it.
    std::mem::forget(co);
    assert_eq!(holder.resume(|| LAZY.get()), 0);
    // The last pin goes inside `resume`: the orphan is destroyed there.
    holder.resume(|| pinner.resume(()));
    let mut reuser = Locals::new();
    reuser.enter(|| LAZY.set(5));
    assert_eq!(holder.resume(|| LAZY.get()), 0);
    drop(churn());
    drop(reuser);
    assert_eq!(holder.resume(|| LAZY.try_with(Cell::get)), Ok(0));
}

#[test]
fn a_resume_whose_closure_suspends_the_coroutine_is_remembered() {
    let mut inner = Locals::new();
    inner.enter(|| ID.set(2));
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        // `resume` used as a scope around a suspension of this coroutine.
        inner.resume(|| {
            y.suspend(());
            ID.get()
        })
    });
    let mut outer = Locals::new();
    outer.enter(|| ID.set(1));
    outer.resume(|| co.resume(()));
    assert_eq!(outer.resume(|| co.resume(())).as_return(), Some(2));
}

#[test]
fn nested_enters_suspended_at_two_levels_each_find_their_block() {
    let mut task = Task::new(|y: &Yielder<(), u32>, ()| {
        let mut a = Locals::new();
        let mut b = Locals::new();
        a.enter(|| {
            ID.set(10);
            b.enter(|| {
                ID.set(20);
                y.suspend(ID.get());
            });
            // `b`'s scope ended in a later run than it began.
            y.suspend(ID.get());
            y.suspend(ID.get());
        });
        drop(b);
        ID.get()
    });
    assert!(matches!(task.resume(), CoroutineResult::Yield(20)));
    assert!(matches!(task.resume(), CoroutineResult::Yield(10)));
    assert!(matches!(task.resume(), CoroutineResult::Yield(10)));
    let others = churn();
    assert!(matches!(task.resume(), CoroutineResult::Return(1)));
    drop(others);
}

#[test]
fn an_enter_begun_before_the_first_resume_ends_with_its_own_block() {
    let mut k = Locals::new();
    let mut co = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        k.enter(|| y.suspend(()));
        y.suspend(());
        ID.get()
    });
    ID.set(7);
    // Started without a `Locals`: the scope begins with the thread's block
    // current, and puts it back when it ends.
    co.resume(());
    let mut l = Locals::new();
    l.enter(|| ID.set(1));
    l.resume(|| co.resume(()));
    assert_eq!(l.resume(|| co.resume(())).as_return(), Some(7));
}

std::thread_local! {
    static LATER: RefCell<Option<(Plain, Plain)>> = const { RefCell::new(None) };
}

/// A coroutine suspended inside a scope begun with the current block B
/// current. Resumed, the scope ends, putting back B unless B is gone, and it
/// writes 99 into `ID` of whatever block is current then.
fn open_scope() -> Plain {
    let mut other = Locals::new();
    let mut scope: Plain = Coroutine::new(move |y: &Yielder<(), ()>, ()| {
        other.enter(|| y.suspend(()));
        let _ = ID.try_with(|id| id.set(99));
        y.suspend(());
    });
    scope.resume(());
    scope
}

/// Runs inside a destructor of a dying block B, with B current: leaves B
/// pinned, and a scope begun with B current suspended in a coroutine.
fn pin_and_leave_a_scope_open() {
    let mut pinner: Plain = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        LAZY.with(|_| y.suspend(()));
    });
    pinner.resume(());
    let scope = open_scope();
    LATER.with(|l| *l.borrow_mut() = Some((pinner, scope)));
}

#[test]
fn a_scope_that_began_in_a_dying_block_does_not_put_it_back_once_orphaned() {
    let mut dying = Locals::new();
    dying.enter(|| {
        ID.set(5);
        LAZY.set(1);
        HOOK.set(Some(OnDrop(Some(Box::new(pin_and_leave_a_scope_open)))));
    });
    ID.set(3);
    drop(dying);
    let (mut pinner, mut scope) = LATER.with(|l| l.borrow_mut().take()).unwrap();
    // The scope ends after the block was orphaned: the thread's own block is
    // current after it, not the orphan.
    scope.resume(());
    assert_eq!(ID.get(), 99);
    pinner.resume(());
    drop(churn());
    assert_eq!(ID.get(), 99);
    drop(scope);
}

/// A coroutine of another library, run bare from inside a task's poll.
type Foreign = Coroutine<(), (), String>;

std::thread_local! {
    static FOREIGN: RefCell<Option<Foreign>> = const { RefCell::new(None) };
}

/// Resumes the coroutine kept in `FOREIGN` with no `resume` of ours around
/// it (whatever is current stays current inside): what it returned, if it
/// did.
fn resume_foreign() -> Option<String> {
    FOREIGN.with(|f| {
        let mut f = f.borrow_mut();
        let co = f.as_mut().expect("a coroutine in FOREIGN");
        match co.resume(()) {
            CoroutineResult::Return(s) => Some(s),
            CoroutineResult::Yield(()) => None,
        }
    })
}

/// A task whose first poll resumes the coroutine in `FOREIGN`, after
/// setting its values, and stays pending.
fn task_that_resumes_foreign(
) -> WithLocals<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    WithLocals::new(Box::pin(poll_fn(|_| {
        ID.set(7);
        NAME.set(String::from("task"));
        assert_eq!(resume_foreign(), None);
        Poll::Pending
    })))
}

#[test]
fn a_scope_left_open_in_a_poll_never_restores_the_task_block_freed_on_another_thread() {
    // Its `enter` records the block that was current when it began: the
    // task's.
    let co: Foreign = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let mut nested = Locals::new();
        nested.enter(|| y.suspend(()));
        String::new()
    });
    FOREIGN.with(|f| *f.borrow_mut() = Some(co));
    let mut task = task_that_resumes_foreign();
    ID.set(50);
    assert_eq!(poll_once(&mut task), Poll::Pending);
    assert_eq!(ID.get(), 50);
    // The task moves to another thread and is freed there, with that
    // thread's pool at its exit.
    std::thread::spawn(move || drop(task)).join().unwrap();
    let others = churn();
    // The scope ends: the block it recorded is gone, so the thread's own
    // block is current after it.
    assert_eq!(resume_foreign().as_deref(), Some(""));
    assert_eq!(ID.get(), 50);
    drop(others);
    FOREIGN.with(|f| f.borrow_mut().take());
}

#[test]
fn a_with_reference_left_open_in_a_poll_outlives_the_task_freed_on_another_thread() {
    // It suspends inside a `with` on the task's value, and reads through
    // that reference when resumed.
    let co: Foreign = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        NAME.with(|name| {
            y.suspend(());
            name.borrow().clone()
        })
    });
    FOREIGN.with(|f| *f.borrow_mut() = Some(co));
    let mut task = task_that_resumes_foreign();
    assert_eq!(poll_once(&mut task), Poll::Pending);
    // The pinned block stays on this thread; the task goes on with a fresh
    // one, which it takes to another thread and frees there.
    std::thread::spawn(move || {
        assert_eq!(
            task.with_locals(|| NAME.with_borrow(String::clone))
                .as_deref(),
            Some("fresh")
        );
        drop(task);
    })
    .join()
    .unwrap();
    let others = churn();
    assert_eq!(resume_foreign().as_deref(), Some("task"));
    drop(others);
    FOREIGN.with(|f| f.borrow_mut().take());
}

#[test]
fn a_stale_scope_never_restores_a_task_block_made_where_its_block_was() {
    ID.set(1);
    // Its `enter` records the block that was current when it began: X's.
    let co: Foreign = Coroutine::new(|y: &Yielder<(), ()>, ()| {
        let mut inner = Locals::new();
        inner.enter(|| y.suspend(()));
        ID.get().to_string()
    });
    FOREIGN.with(|f| *f.borrow_mut() = Some(co));
    let mut x = Locals::new();
    x.enter(|| {
        ID.set(2);
        assert_eq!(resume_foreign(), None);
    });
    let x_block = format!("{:?}", x.as_raw());
    drop(x);
    // A task's block takes X's place, and the scope ends inside its poll.
    let mut task = WithLocals::new(Box::pin(poll_fn(|_| {
        ID.set(7);
        let task_block = format!("{:?}", co_local::RawBlock::current());
        Poll::Ready((resume_foreign(), task_block))
    })));
    let Poll::Ready((seen, task_block)) = poll_once(&mut task) else {
        unreachable!("the task is ready at its first poll")
    };
    assert_eq!(task_block, x_block, "the pool gave X's memory to the task");
    // X is gone: the scope put back the thread's own block, not the task's.
    assert_eq!(seen.as_deref(), Some("1"));
    assert_eq!(ID.get(), 1);
    FOREIGN.with(|f| f.borrow_mut().take());
}

std::thread_local! {
    static OPEN_SCOPE: RefCell<Option<Plain>> = const { RefCell::new(None) };
}

/// Runs inside a destructor of a block being reset, with it current: leaves
/// a scope begun with that block current open in a coroutine.
fn leave_a_scope_open() {
    let scope = open_scope();
    OPEN_SCOPE.with(|s| *s.borrow_mut() = Some(scope));
}

#[test]
fn a_scope_that_began_in_a_block_being_reset_does_not_put_it_back() {
    let mut locals = Locals::new();
    locals.enter(|| {
        ID.set(5);
        HOOK.set(Some(OnDrop(Some(Box::new(leave_a_scope_open)))));
    });
    ID.set(3);
    // Made anew in place (nothing pins it): the block that was current when
    // the scope began is gone, though its memory is `locals`' again.
    locals.reset();
    locals.enter(|| ID.set(8));
    let mut scope = OPEN_SCOPE.with(|s| s.borrow_mut().take()).unwrap();
    scope.resume(());
    assert_eq!(
        ID.get(),
        99,
        "the scope ended with the thread's own block current"
    );
    assert_eq!(locals.enter(|| ID.get()), 8);
    drop(scope);
}
