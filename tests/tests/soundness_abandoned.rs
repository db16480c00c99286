//! A call of a task that never ends: generator's `new_scoped_local` lets a
//! generator borrow a task, suspend inside one of its calls
//! (`with_locals`, a poll), and be forgotten, which is safe. The call's way
//! out never runs, so this thread keeps naming the task's block (as the
//! current block, the attached one, a `resume`'s remembered one) while the
//! borrow is over and the task may move to another thread and be dropped
//! there. co_local must then never free or share that block: the task goes
//! on with a fresh one, and the abandoned block is leaked.
//!
//! `scripts/valgrind.sh` runs these under memcheck for heap errors only:
//! generator does not register its stacks, so memcheck reports its own
//! switches. Each test also checks values: freed memory reused by `churn`
//! would show up as a wrong value.

use std::cell::Cell;

use co_local::{co_local, Locals, WithLocals};
use generator::Gn;

co_local! {
    static ID: Cell<u64> = const { Cell::new(0) };
}

fn churn() -> Vec<Locals> {
    co_local_tests::churn(|i| ID.set(900 + u64::from(i)))
}

/// Suspends a generator inside `task.with_locals`, runs `around` around
/// that first resume, and forgets the generator.
fn abandon_a_call(
    task: &mut WithLocals<std::future::Ready<()>>,
    around: impl FnOnce(&mut dyn FnMut()),
) {
    let mut g = Gn::<()>::new_scoped_local(move |mut s| {
        task.with_locals(|| s.yield_with(()));
    });
    around(&mut || {
        g.resume();
    });
    std::mem::forget(g);
}

#[test]
fn a_remembered_task_block_is_never_freed_under_the_locals_that_remembers_it() {
    let mut task = WithLocals::new(std::future::ready(()));
    task.with_locals(|| ID.set(7));
    let mut locals = Locals::new();
    abandon_a_call(&mut task, |resume| locals.resume(resume));
    std::thread::spawn(move || drop(task)).join().unwrap();
    let _churn = churn();
    let seen = locals.resume(|| ID.get());
    assert!(seen == 7 || seen == 0, "read {seen}");
}

#[test]
fn the_current_block_is_never_freed_on_another_thread() {
    let mut task = WithLocals::new(std::future::ready(()));
    task.with_locals(|| ID.set(7));
    abandon_a_call(&mut task, |resume| resume());
    std::thread::spawn(move || drop(task)).join().unwrap();
    let _churn = churn();
    // Still current here: the abandoned block, leaked, with its value.
    assert_eq!(ID.get(), 7);
}

#[test]
fn a_task_goes_on_with_a_fresh_block_after_an_abandoned_call() {
    let mut task = WithLocals::new(std::future::ready(()));
    task.with_locals(|| ID.set(7));
    ID.set(1);
    abandon_a_call(&mut task, |resume| resume());
    let seen = std::thread::spawn(move || {
        let seen = task.with_locals(|| ID.get());
        task.with_locals(|| ID.set(8));
        (seen, task.with_locals(|| ID.get()))
    })
    .join()
    .unwrap();
    assert_eq!(seen, (Some(0), Some(8)));
    // This thread still has the abandoned block current, untouched by the
    // task on the other thread.
    assert_eq!(ID.get(), 7);
}

#[test]
fn a_restore_never_takes_a_pooled_block_for_an_attached_one() {
    let mut task = WithLocals::new(std::future::ready(()));
    abandon_a_call(&mut task, |resume| resume());
    drop(task);
    // Whatever was recorded as attached is not recycled under it.
    let mut a = Locals::new();
    a.enter(|| ID.set(5));
    let mut inner = Locals::new();
    let mut g = Gn::<()>::new_scoped_local(|mut s| {
        inner.enter(|| s.yield_with(()));
    });
    a.enter(|| {
        g.resume();
    });
    drop(a);
    let mut b = Locals::new();
    b.enter(|| ID.set(6));
    // The scope ends: it began with `a`'s block current, which is gone.
    g.resume();
    let seen = ID.get();
    drop(g);
    assert_ne!(
        seen, 6,
        "b's block became current though nothing entered it"
    );
}

/// generator 0.8 frees a generator's stack without unwinding it when the
/// generator is dropped while the thread panics: the frame of a task call
/// suspended on that stack is gone without its way out. Nothing co_local
/// keeps for the call may live on that stack: the thread's chain of linked
/// blocks is walked by the next checked restore.
#[test]
fn a_task_call_on_a_stack_freed_without_unwinding_leaves_nothing_dangling() {
    let mut task = WithLocals::new(std::future::ready(()));
    task.with_locals(|| ID.set(7));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut g = Gn::<()>::new_scoped_local(|mut s| {
            task.with_locals(|| s.yield_with(()));
        });
        g.resume();
        panic!("the generator is dropped while this thread panics");
    }));
    let _churn = churn();
    // A block dies inside a scope: the scope's restore walks the chain.
    let mut block = Locals::new();
    block.enter(|| drop(Locals::new()));
    // The task goes on with a fresh block (its call never ended).
    assert_eq!(task.with_locals(|| ID.get()), Some(0));
}

/// The same for a `SendLocals`, whose block is a task block too: an `enter`
/// abandoned here, then the `SendLocals` moved to another thread, used and
/// dropped there.
#[test]
fn a_send_locals_abandoned_inside_enter_is_never_freed_or_shared() {
    let mut locals = co_local::SendLocals::new();
    locals.enter(|| ID.set(7));
    let mut g = Gn::<()>::new_scoped_local(|mut s| {
        locals.enter(|| s.yield_with(()));
    });
    g.resume();
    std::mem::forget(g);
    let seen = std::thread::spawn(move || {
        // A fresh block: the abandoned one stays with this test's thread.
        let seen = locals.enter(|| ID.get());
        locals.enter(|| ID.set(8));
        let after = locals.enter(|| ID.get());
        drop(locals);
        (seen, after)
    })
    .join()
    .unwrap();
    assert_eq!(seen, (0, 8));
    let _churn = churn();
    // Still current here: the abandoned block, leaked, with its value.
    assert_eq!(ID.get(), 7);
}
