//! A random driver of the task-block paths, as the reviews drove them: on one
//! thread, random interleavings of `WithLocals` polls (tasks kept in slots,
//! and sub-tasks made, polled and dropped inside a poll), corosensei
//! coroutines switched with `Locals::resume` that suspend inside sub-task
//! polls, scopes and `with` closures, coroutines resumed plainly that pin a
//! task's block or leave an `enter` open in it, blocks dying everywhere
//! (also in destructors), and drops of suspended coroutines; and, across
//! two threads, `Send` tasks with pending sub-tasks polled and dropped on
//! either thread, next to coroutines of the first thread that leave scopes
//! open in their polls.
//!
//! Every context knows the value of `ID` its block holds (the thread's, each
//! task's, each coroutine's, each entered `Locals`'), and checks it on entry
//! and after every action; each value whose destructor runs checks the block
//! it belongs to is current. `.ci/run` runs this binary natively and under
//! valgrind's memcheck with the default number of seeds
//! (`CO_LOCAL_RANDOM_SEEDS=N` runs seeds `0..N`, `CO_LOCAL_RANDOM_SEED=N`
//! replays seed `N`).

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread;

use co_local::{co_local, Locals, WithLocals};
use co_local_tests::poll_once;
use corosensei::{Coroutine, CoroutineResult, Yielder};

co_local! {
    static ID: Cell<u64> = const { Cell::new(0) };
    static GUARDS: RefCell<Vec<Guard>> = const { RefCell::new(Vec::new()) };
}

/// The seeds a test runs: `0..default`, or `0..CO_LOCAL_RANDOM_SEEDS`, or
/// the one seed `CO_LOCAL_RANDOM_SEED` (to replay a failure).
fn seeds(default: u64) -> std::ops::Range<u64> {
    let var = |name| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    if let Some(seed) = var("CO_LOCAL_RANDOM_SEED") {
        return seed..seed + 1;
    }
    0..var("CO_LOCAL_RANDOM_SEEDS").unwrap_or(default)
}

/// xorshift64*: the same decisions for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
    }
}

std::thread_local! {
    /// What went wrong on this thread (destructors and coroutines being
    /// unwound cannot panic).
    static FAILURES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Guards made on this thread and not dropped yet (on any thread): once
    /// a one-thread seed has dropped everything, 0, or a block was lost.
    static GUARDS_ALIVE: Cell<i64> = const { Cell::new(0) };
}

fn fail(what: String) {
    FAILURES.with_borrow_mut(|f| f.push(what));
}

fn check(expect: u64, what: &str) {
    let seen = ID.get();
    if seen != expect {
        fail(format!("{what}: ID is {seen}, expected {expect}"));
    }
}

fn take_failures() -> Vec<String> {
    FAILURES.take()
}

/// A block dies: a scratch `Locals`, entered and dropped. Every restore
/// pending on this thread is checked from then on.
fn die() {
    co_local_tests::a_block_dies(|| ID.set(999_999));
}

/// Lives in a block with `ID` = `expect`; when that block dies, a block
/// dies inside its destructor, after which its own block must still be
/// current.
struct Guard {
    expect: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        GUARDS_ALIVE.set(GUARDS_ALIVE.get() - 1);
        check(self.expect, "guard before");
        die();
        check(self.expect, "guard after");
    }
}

/// Gives the current block its `ID` and a guard.
fn seed_block(id: u64) {
    ID.set(id);
    GUARDS_ALIVE.set(GUARDS_ALIVE.get() + 1);
    GUARDS.with_borrow_mut(|g| g.push(Guard { expect: id }));
}

// ---------------------------------------------------------------------------
// One thread: the world of a seed.

/// A task of a slot: polled a few times, each poll a few actions.
struct Script {
    id: u64,
    polls_left: u32,
    /// Its block was left behind (a coroutine resumed plainly in its poll
    /// still pins it): the next poll finds a fresh one, and seeds it.
    lost: Cell<bool>,
}

impl Future for Script {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.lost.replace(false) {
            seed_block(self.id);
        }
        let ctx = Ctx {
            expect: self.id,
            y: None,
            depth: 1,
            task: Some(&self.lost),
            restores: true,
        };
        steps(ctx);
        if self.polls_left == 0 {
            return Poll::Ready(());
        }
        self.polls_left -= 1;
        Poll::Pending
    }
}

type Task = Pin<Box<WithLocals<Script>>>;

enum Kind {
    /// Switched with `Locals::resume`; runs actions, checks its block.
    Scripted,
    /// Resumed plainly, in the block of whoever resumes it: holds a
    /// reference from `with` across each suspension (a pin).
    Pinner,
    /// Resumed plainly: suspends inside an `enter` of its own, so the
    /// resumer's block is recorded by a scope left open.
    Opener,
}

struct Co {
    co: Coroutine<(), (), ()>,
    locals: Locals,
    kind: Kind,
}

std::thread_local! {
    static RNG: RefCell<Rng> = RefCell::new(Rng::new(0));
    static BUDGET: Cell<u32> = const { Cell::new(0) };
    static NEXT_ID: Cell<u64> = const { Cell::new(10) };
    static TASKS: RefCell<Vec<Option<Task>>> = const { RefCell::new(Vec::new()) };
    static COROS: RefCell<Vec<Option<Co>>> = const { RefCell::new(Vec::new()) };
}

fn rng(n: u64) -> u64 {
    RNG.with_borrow_mut(|r| r.below(n))
}

fn spend() -> bool {
    let left = BUDGET.get();
    BUDGET.set(left.saturating_sub(1));
    left > 0
}

fn fresh_id() -> u64 {
    NEXT_ID.replace(NEXT_ID.get() + 1)
}

/// Where actions run: the `ID` of the current block, the yielder of the
/// coroutine they run in (if any), the nesting depth, if the current block
/// is a task's, where to say that it was left behind, and whether a frame
/// that owns the current block puts the block before it back when it ends
/// (a scope, a task's poll, a coroutine: not the thread's own frame).
#[derive(Clone, Copy)]
struct Ctx<'a> {
    expect: u64,
    y: Option<&'a Yielder<(), ()>>,
    depth: u32,
    task: Option<&'a Cell<bool>>,
    restores: bool,
}

impl<'a> Ctx<'a> {
    /// The context of a block entered here.
    fn inner(self, expect: u64, task: Option<&'a Cell<bool>>) -> Ctx<'a> {
        Ctx {
            expect,
            depth: self.depth + 1,
            task,
            restores: true,
            ..self
        }
    }

    /// The context of a `scope` here: the same block, another value.
    fn scoped(self, expect: u64) -> Ctx<'a> {
        Ctx {
            expect,
            depth: self.depth + 1,
            ..self
        }
    }
}

/// A few random actions, each followed by a check. `false` if one of them
/// left another block current (an opener resumed plainly): the frame that
/// owns the current block must end without looking further.
fn steps(ctx: Ctx<'_>) -> bool {
    check(ctx.expect, "entry");
    for _ in 0..rng(4) {
        if !spend() {
            break;
        }
        if !action(ctx) {
            return false;
        }
        check(ctx.expect, "after an action");
    }
    true
}

fn action(ctx: Ctx<'_>) -> bool {
    let nest = ctx.depth < 5;
    match rng(14) {
        0 => die(),
        1 if nest => {
            let id = fresh_id();
            let mut block = Locals::new();
            block.enter(|| {
                seed_block(id);
                steps(ctx.inner(id, None));
            });
            if rng(2) == 0 {
                drop(block);
            }
        }
        2 if nest => {
            let id = fresh_id();
            let more = ID.scope(id, || steps(ctx.scoped(id)));
            if !more {
                return false;
            }
        }
        3 if nest => poll_slot(),
        4 => {
            drop(take(&TASKS));
        }
        5 => spawn_task(),
        6 if nest => sub_task(ctx),
        7 if nest => return resume_slot(ctx),
        8 => return drop_coroutine(ctx),
        9 => spawn_coroutine(),
        10 => {
            if let Some(y) = ctx.y {
                y.suspend(());
            }
        }
        11 => {
            if let Some(y) = ctx.y {
                let expect = ctx.expect;
                ID.with(|id| {
                    y.suspend(());
                    if id.get() != expect {
                        fail(format!("with across a suspension: {}", id.get()));
                    }
                });
            }
        }
        _ => {}
    }
    true
}

/// Takes what a random slot holds, if anything: out of its slot while it
/// is used (polled, resumed), so that nothing reaches it meanwhile.
fn take<T>(slots: &'static std::thread::LocalKey<RefCell<Vec<Option<T>>>>) -> Option<T> {
    let len = slots.with_borrow(Vec::len) as u64;
    if len == 0 {
        return None;
    }
    let at = rng(len) as usize;
    slots.with_borrow_mut(|s| s[at].take())
}

/// Puts `item` in a free slot: the one it came from may hold another by now.
fn put<T>(slots: &'static std::thread::LocalKey<RefCell<Vec<Option<T>>>>, item: T) {
    slots.with_borrow_mut(|s| match s.iter_mut().find(|s| s.is_none()) {
        Some(free) => *free = Some(item),
        None => s.push(Some(item)),
    });
}

fn spawn_task() {
    let id = fresh_id();
    let mut task = Box::pin(WithLocals::new(Script {
        id,
        polls_left: rng(4) as u32,
        lost: Cell::new(false),
    }));
    task.as_mut().with_locals(|| seed_block(id));
    put(&TASKS, task);
}

/// Polls a task of a slot once; puts it back unless it is done.
fn poll_slot() {
    let Some(mut task) = take(&TASKS) else { return };
    if poll_once(&mut task).is_pending() {
        put(&TASKS, task);
    }
}

/// A sub-task made, polled a few times and dropped inside this frame; its
/// poll may suspend the coroutine this frame runs in.
fn sub_task(ctx: Ctx<'_>) {
    let id = fresh_id();
    let lost = Cell::new(false);
    let mut left = rng(3);
    let mut task = WithLocals::new(poll_fn(|_| {
        if lost.replace(false) {
            seed_block(id);
        }
        if !steps(ctx.inner(id, Some(&lost))) || left == 0 {
            return Poll::Ready(());
        }
        left -= 1;
        Poll::Pending
    }));
    task.with_locals(|| seed_block(id));
    for _ in 0..=rng(3) {
        if poll_once(&mut task).is_ready() {
            break;
        }
    }
}

fn spawn_coroutine() {
    let kind = match rng(4) {
        0 => Kind::Pinner,
        1 => Kind::Opener,
        _ => Kind::Scripted,
    };
    let id = fresh_id();
    let co = match kind {
        Kind::Scripted => Coroutine::new(move |y: &Yielder<(), ()>, ()| loop {
            let ctx = Ctx {
                expect: id,
                y: Some(y),
                depth: 1,
                task: None,
                restores: true,
            };
            if !steps(ctx) || rng(3) == 0 {
                return;
            }
            y.suspend(());
        }),
        Kind::Pinner => Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
            ID.with(|_| y.suspend(()));
            y.suspend(());
        }),
        Kind::Opener => Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
            let mut block = Locals::new();
            block.enter(|| y.suspend(()));
        }),
    };
    let mut locals = Locals::new();
    locals.enter(|| seed_block(id));
    let co = Co { co, locals, kind };
    put(&COROS, co);
}

/// Resumes a coroutine of a slot: a scripted one with `Locals::resume`, the
/// others plainly. `false` if an opener left its block current.
fn resume_slot(ctx: Ctx<'_>) -> bool {
    let Some(mut co) = take(&COROS) else {
        return true;
    };
    let (done, more) = match co.kind {
        Kind::Scripted => {
            let c = &mut co.co;
            let done = matches!(
                co.locals.resume(|| c.resume(())),
                CoroutineResult::Return(())
            );
            (done, true)
        }
        Kind::Pinner => {
            // It pins the current block, which a task then leaves behind.
            if let Some(lost) = ctx.task {
                lost.set(true);
            }
            (
                matches!(co.co.resume(()), CoroutineResult::Return(())),
                true,
            )
        }
        // In the thread's own frame nothing would restore the block it
        // leaves current.
        Kind::Opener if !ctx.restores => (false, true),
        Kind::Opener => (
            matches!(co.co.resume(()), CoroutineResult::Return(())),
            false,
        ),
    };
    if done {
        drop(co);
    } else {
        put(&COROS, co);
    }
    more
}

/// Drops a coroutine of a slot, suspended or not, in one of three orders.
/// A coroutine dropped outside `Locals::resume` unwinds the scopes it is
/// suspended in, here, and their ends put back what they recorded: `false`
/// then, as for an opener resumed plainly (and inside a scratch scope in
/// the thread's own frame).
fn drop_coroutine(ctx: Ctx<'_>) -> bool {
    let Some(co) = take(&COROS) else {
        return true;
    };
    let Co { co, mut locals, .. } = co;
    let plain = |co: Coroutine<(), (), ()>| {
        if ctx.restores {
            drop(co);
        } else {
            Locals::new().enter(|| drop(co));
        }
        !ctx.restores
    };
    match rng(3) {
        0 => {
            locals.resume(|| drop(co));
            drop(locals);
            true
        }
        1 => {
            drop(locals);
            plain(co)
        }
        _ => {
            let more = plain(co);
            drop(locals);
            more
        }
    }
}

fn run_seed(seed: u64) {
    RNG.set(Rng::new(seed));
    BUDGET.set(250);
    ID.set(1);
    let top = Ctx {
        expect: 1,
        y: None,
        depth: 0,
        task: None,
        restores: false,
    };
    while spend() {
        action(top);
        check(1, "top");
    }
    // Whatever is left dies now: coroutines first (their stacks may hold
    // sub-tasks), then the tasks.
    let coros = COROS.take();
    for co in coros.into_iter().flatten() {
        let Co { co, mut locals, .. } = co;
        locals.resume(|| drop(co));
    }
    drop(TASKS.take());
    check(1, "end");
    let lost = GUARDS_ALIVE.replace(0);
    if lost != 0 {
        fail(format!("{lost} guards never dropped"));
    }
    let failures = take_failures();
    assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
}

#[test]
fn random_interleavings_of_tasks_and_coroutines_on_one_thread() {
    for seed in seeds(300) {
        run_seed(seed);
    }
}

// ---------------------------------------------------------------------------
// Two threads: `Send` tasks that move.

/// A `Send` task: a few polls, each a few actions with its own decisions,
/// and a sub-task that may stay pending across polls (and so move with it).
struct Mover {
    id: u64,
    rng: Rng,
    polls_left: u32,
    sub: Option<Pin<Box<WithLocals<Mover>>>>,
}

impl Mover {
    fn task(id: u64, seed: u64) -> Pin<Box<WithLocals<Mover>>> {
        let mut rng = Rng::new(seed);
        let mut task = Box::pin(WithLocals::new(Mover {
            id,
            polls_left: rng.below(4) as u32,
            rng,
            sub: None,
        }));
        task.as_mut().with_locals(|| seed_block(id));
        task
    }
}

std::thread_local! {
    /// Coroutines of the first thread, resumed plainly inside polls there:
    /// each leaves an `enter` open (or a plain suspension) in the poll's
    /// block, which may move away and die before it ends.
    static OPENERS: RefCell<Vec<Coroutine<(), (), ()>>> = const { RefCell::new(Vec::new()) };
    static HOME: Cell<bool> = const { Cell::new(false) };
}

impl Future for Mover {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let id = this.id;
        check(id, "mover entry");
        for _ in 0..this.rng.below(5) {
            match this.rng.below(7) {
                0 => die(),
                1 => {
                    let inner = id + 1_000_000;
                    ID.scope(inner, || {
                        die();
                        check(inner, "mover scope");
                    });
                }
                2 if this.sub.is_none() => {
                    let seed = this.rng.below(u64::MAX);
                    this.sub = Some(Mover::task(id + 1, seed));
                }
                3 => {
                    if let Some(sub) = this.sub.as_mut() {
                        if sub.as_mut().poll(cx).is_ready() {
                            this.sub = None;
                        }
                    }
                }
                4 => this.sub = None,
                5 if HOME.get() => {
                    // Ends this poll's checks: the opener may leave its own
                    // block current.
                    let resumed = OPENERS.with_borrow_mut(|o| {
                        let at = this.rng.below(o.len().max(1) as u64) as usize;
                        o.get_mut(at).map(|co| co.resume(()))
                    });
                    if resumed.is_some() {
                        return Poll::Pending;
                    }
                }
                _ => {}
            }
            check(id, "mover after an action");
        }
        if this.polls_left == 0 {
            return Poll::Ready(());
        }
        this.polls_left -= 1;
        Poll::Pending
    }
}

enum Job {
    Poll(Pin<Box<WithLocals<Mover>>>),
    Drop(Pin<Box<WithLocals<Mover>>>),
}

#[test]
fn random_moves_of_tasks_between_two_threads() {
    let (to_other, jobs) = mpsc::channel::<Job>();
    type Answer = (Option<Pin<Box<WithLocals<Mover>>>>, Vec<String>);
    let (back, from_other) = mpsc::channel::<Answer>();
    let other = thread::spawn(move || {
        ID.set(2);
        for job in jobs {
            let answer = match job {
                Job::Poll(mut task) => poll_once(&mut task).is_pending().then_some(task),
                Job::Drop(task) => {
                    drop(task);
                    None
                }
            };
            check(2, "other thread");
            back.send((answer, take_failures())).unwrap();
        }
    });
    HOME.set(true);
    ID.set(1);
    for seed in seeds(100) {
        let mut rng = Rng::new(seed);
        OPENERS.with_borrow_mut(|o| {
            o.clear();
            for _ in 0..3 {
                o.push(Coroutine::new(|y: &Yielder<(), ()>, ()| loop {
                    let mut block = Locals::new();
                    block.enter(|| y.suspend(()));
                    ID.with(|_| ());
                    y.suspend(());
                }));
            }
        });
        let mut tasks: Vec<_> = (0..4)
            .map(|i| Mover::task(100 * (i + 1), rng.below(u64::MAX)))
            .collect();
        while !tasks.is_empty() {
            let at = rng.below(tasks.len() as u64) as usize;
            let task = tasks.swap_remove(at);
            let on_other = |job| {
                to_other.send(job).unwrap();
                let (kept, failures) = from_other.recv().unwrap();
                FAILURES.with_borrow_mut(|f| f.extend(failures));
                kept
            };
            let kept = match rng.below(5) {
                0 => on_other(Job::Drop(task)),
                1 | 2 => on_other(Job::Poll(task)),
                3 => None,
                _ => {
                    let mut task = task;
                    poll_once(&mut task).is_pending().then_some(task)
                }
            };
            check(1, "home");
            tasks.extend(kept);
            // Now and then an opener goes on outside every poll: the scope
            // it left open ends, naming a block that may be gone.
            // (Inside a scope of a scratch block: an opener leaves a block
            // of its own current, which the scope's end replaces.)
            if rng.below(3) == 0 {
                let at = rng.below(3) as usize;
                Locals::new().enter(|| OPENERS.with_borrow_mut(|o| o[at].resume(())));
            }
        }
        OPENERS.with_borrow_mut(Vec::clear);
        let failures = take_failures();
        assert!(failures.is_empty(), "seed {seed}: {failures:#?}");
    }
    drop(to_other);
    other.join().unwrap();
}
