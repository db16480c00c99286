//! The cases of the access, switch, creation and `Locals` groups, and the
//! live-coroutine scaling group, shared by the bench targets that include
//! this module (each uses a different part of it).
//!
//! Every op runs in a loop of [`ops`], followed by a compiler barrier, so no
//! part of it is hoisted out of the loop or merged with the next op. Each
//! loop is its own `#[inline(never)]` function, so the same machine code runs
//! whether it is called on the thread, inside `Locals::enter` or inside a
//! coroutine.

#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};
use std::sync::{LazyLock, Mutex, Once};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use co_local::{LocalWithLocals, Locals, SendLocals, WithLocals};
use co_local_benches::{ops, Case, Group};
use co_runtime::{Coroutine, DEFAULT_STACK_SIZE};
use context::stack::ProtectedFixedSizeStack;
use context::{Context, Transfer};

co_local::co_local! {
    /// The `const {}` value of the access group.
    pub static CO_CONST: Cell<u64> = const { Cell::new(0) };
    /// The lazy value of the access group.
    pub static CO_LAZY: Cell<u64> = Cell::new(0);
    /// A constant with drop glue, std's idiomatic form: the blocks group.
    pub static CO_CONST_VEC: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// A lazy value with drop glue: the blocks group.
    pub static CO_LAZY_VEC: RefCell<Vec<u64>> = RefCell::new(Vec::new());
}

std::thread_local! {
    static STD_CONST: Cell<u64> = const { Cell::new(0) };
    // The lazy baseline: lazy on purpose.
    #[allow(clippy::missing_const_for_thread_local)]
    static STD_LAZY: Cell<u64> = Cell::new(0);
}

tokio::task_local! {
    static TOKIO_CELL: Cell<u64>;
    // Ten keys for a task that has ten task-locals (the async group).
    static TOKIO_0: Cell<u64>;
    static TOKIO_1: Cell<u64>;
    static TOKIO_2: Cell<u64>;
    static TOKIO_3: Cell<u64>;
    static TOKIO_4: Cell<u64>;
    static TOKIO_5: Cell<u64>;
    static TOKIO_6: Cell<u64>;
    static TOKIO_7: Cell<u64>;
    static TOKIO_8: Cell<u64>;
    static TOKIO_9: Cell<u64>;
}

may::coroutine_local!(static MAY_CELL: Cell<u64> = Cell::new(0));

// ---------------------------------------------------------------------------
// Access: `X.set(X.get() + 1)` on a `Cell<u64>`.
// ---------------------------------------------------------------------------

/// The loop and its barrier alone: what "beyond the loop" is measured from.
#[inline(never)]
pub fn loop_only(n: u64) -> Duration {
    ops(n, || {})
}

#[inline(never)]
pub fn std_const(n: u64) -> Duration {
    ops(n, || STD_CONST.set(STD_CONST.get() + 1))
}

#[inline(never)]
pub fn std_lazy(n: u64) -> Duration {
    ops(n, || STD_LAZY.set(STD_LAZY.get() + 1))
}

#[inline(never)]
pub fn co_const(n: u64) -> Duration {
    ops(n, || CO_CONST.set(CO_CONST.get() + 1))
}

#[inline(never)]
pub fn co_lazy(n: u64) -> Duration {
    ops(n, || CO_LAZY.set(CO_LAZY.get() + 1))
}

/// The op in one `with`: what `X.set(X.get() + 1)` costs when the get and
/// the set share one lookup (for the lazy value).
#[inline(never)]
pub fn co_lazy_one_with(n: u64) -> Duration {
    ops(n, || CO_LAZY.with(|c| c.set(c.get() + 1)))
}

// Two hand-written models of the lazy fast path, to tell what its time is
// made of: a thread-local block pointer, a state byte next to the value, and
// the value's offset either loaded from a static (as co_local does) or a
// constant (as it would be if the layout were fixed at link time).

std::thread_local! {
    static MODEL_BLOCK: Cell<*mut u64> = const { Cell::new(std::ptr::null_mut()) };
}

/// The offset (in `u64`s) of the model's value; its state byte follows.
static MODEL_OFFSET: AtomicU32 = AtomicU32::new(2);
const MODEL_OFFSET_CONST: usize = 2;

#[cold]
#[inline(never)]
fn model_block() -> *mut u64 {
    // Leaked: one small block per thread, for the process's lifetime.
    let block: &'static mut [u64; 8] = Box::leak(Box::new([0, 0, 0, 1, 0, 0, 0, 0]));
    MODEL_BLOCK.set(block.as_mut_ptr());
    // Written at run time, so the optimiser cannot fold it to a constant.
    MODEL_OFFSET.store(MODEL_OFFSET_CONST as u32, Ordering::Relaxed);
    block.as_mut_ptr()
}

#[inline(always)]
fn model_op(offset: usize) {
    let mut base = MODEL_BLOCK.get();
    if base.is_null() {
        base = model_block();
    }
    // SAFETY: `base` is this thread's leaked 8-word block; `offset` is 2,
    // so the value (word 2) and its state byte (first byte of word 3) are
    // inside it.
    unsafe {
        if *base.add(offset + 1).cast::<u8>() != 1 {
            model_block();
        }
        *base.add(offset) += 1;
    }
}

/// The model with the offset loaded from a static on each access.
#[inline(never)]
pub fn model_loaded_offset(n: u64) -> Duration {
    ops(
        n,
        || model_op(MODEL_OFFSET.load(Ordering::Relaxed) as usize),
    )
}

/// The model with a constant offset: one load fewer per access.
#[inline(never)]
pub fn model_const_offset(n: u64) -> Duration {
    ops(n, || model_op(MODEL_OFFSET_CONST))
}

/// tokio's `task_local!` has `with` only for a `Cell`: one `with` for the
/// get and one for the set, as `X.set(X.get() + 1)` does.
#[inline(never)]
fn tokio_loop(n: u64) -> Duration {
    ops(n, || {
        let v = TOKIO_CELL.with(Cell::get);
        TOKIO_CELL.with(|c| c.set(v + 1));
    })
}

pub fn tokio_task_local(n: u64) -> Duration {
    TOKIO_CELL.sync_scope(Cell::new(0), || {
        tokio_loop(1);
        tokio_loop(n)
    })
}

/// may's `coroutine_local!` has `with` only: one for the get, one for the set.
#[inline(never)]
fn may_loop(n: u64) -> Duration {
    ops(n, || {
        let v = MAY_CELL.with(Cell::get);
        MAY_CELL.with(|c| c.set(v + 1));
    })
}

/// Runs [`may_loop`] inside a may coroutine, may having one worker thread.
pub fn may_coroutine_local(n: u64) -> Duration {
    static CONFIG: Once = Once::new();
    CONFIG.call_once(|| {
        may::config().set_workers(1);
    });
    // SAFETY: may's `spawn` is unsafe because a coroutine may move between
    // worker threads (so thread-locals may change under it) and must not
    // block its worker. This one has a single worker to run on, touches no
    // thread-local of its own and does not block.
    let handle = unsafe {
        may::coroutine::spawn(move || {
            may_loop(1);
            may_loop(n)
        })
    };
    handle.join().expect("the may coroutine panicked")
}

/// The pthread key of [`pthread_get`] and [`pthread_set`], made once.
static PTHREAD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);

extern "C" fn free_boxed_cell(value: *mut libc::c_void) {
    // SAFETY: the only values stored under the key are from `Box::into_raw`
    // in `pthread_cell`, and pthread calls this once per thread at its exit.
    drop(unsafe { Box::from_raw(value.cast::<Cell<u64>>()) });
}

fn pthread_key() -> libc::pthread_key_t {
    static MAKE: Once = Once::new();
    MAKE.call_once(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid place for the new key; the destructor has
        // the signature pthread expects.
        let err = unsafe { libc::pthread_key_create(&mut key, Some(free_boxed_cell)) };
        assert_eq!(err, 0, "pthread_key_create failed");
        PTHREAD_KEY.store(key, Ordering::Relaxed);
    });
    PTHREAD_KEY.load(Ordering::Relaxed)
}

/// The thread's boxed cell under the pthread key (made if missing).
#[inline(always)]
fn pthread_cell(key: libc::pthread_key_t) -> &'static Cell<u64> {
    // SAFETY: `key` is a key made by `pthread_key`.
    let mut value = unsafe { libc::pthread_getspecific(key) };
    if value.is_null() {
        value = make_pthread_cell(key);
    }
    // SAFETY: non-null values under the key are boxed `Cell<u64>`s of this
    // thread, freed only at its exit.
    unsafe { &*value.cast::<Cell<u64>>() }
}

#[cold]
#[inline(never)]
fn make_pthread_cell(key: libc::pthread_key_t) -> *mut libc::c_void {
    let value = Box::into_raw(Box::new(Cell::new(0u64))).cast();
    // SAFETY: `key` is a key made by `pthread_key`; the value is freed by
    // its destructor.
    let err = unsafe { libc::pthread_setspecific(key, value) };
    assert_eq!(err, 0, "pthread_setspecific failed");
    value
}

#[inline(always)]
fn pthread_get() -> u64 {
    pthread_cell(PTHREAD_KEY.load(Ordering::Relaxed)).get()
}

#[inline(always)]
fn pthread_set(v: u64) {
    pthread_cell(PTHREAD_KEY.load(Ordering::Relaxed)).set(v);
}

/// `pthread_getspecific` for the get and again for the set.
#[inline(never)]
fn pthread_loop(n: u64) -> Duration {
    ops(n, || pthread_set(pthread_get() + 1))
}

pub fn pthread_specific(n: u64) -> Duration {
    pthread_key();
    pthread_loop(1);
    pthread_loop(n)
}

/// The seed's solution 1, as QEMU merged it: one global map from the
/// current coroutine to its value, behind one lock.
static COROUTINE_VALUES: LazyLock<Mutex<HashMap<u64, u64>>> = LazyLock::new(Default::default);

std::thread_local! {
    /// What `qemu_coroutine_self()` reads: the running coroutine's id.
    static CURRENT_COROUTINE: Cell<u64> = const { Cell::new(1) };
}

#[inline(always)]
fn map_get() -> u64 {
    let id = CURRENT_COROUTINE.get();
    let map = COROUTINE_VALUES.lock().unwrap();
    map.get(&id).copied().unwrap_or(0)
}

#[inline(always)]
fn map_set(v: u64) {
    let id = CURRENT_COROUTINE.get();
    COROUTINE_VALUES.lock().unwrap().insert(id, v);
}

#[inline(never)]
fn mutex_map_loop(n: u64) -> Duration {
    ops(n, || map_set(map_get() + 1))
}

pub fn mutex_map(n: u64) -> Duration {
    mutex_map_loop(1);
    mutex_map_loop(n)
}

/// `f` on the thread: outside every coroutine, the thread's own block.
pub fn on_thread(f: fn(u64) -> Duration) -> impl Fn(u64) -> Duration {
    move |n| {
        f(1);
        f(n)
    }
}

/// `f` inside `Locals::enter` of a new block.
pub fn in_locals(f: fn(u64) -> Duration) -> impl Fn(u64) -> Duration {
    move |n| {
        let mut locals = Locals::new();
        locals.enter(|| {
            f(1);
            f(n)
        })
    }
}

/// `f` inside a new co_runtime coroutine.
pub fn in_coroutine(f: fn(u64) -> Duration) -> impl Fn(u64) -> Duration {
    move |n| {
        let mut co = Coroutine::<(), (), Duration>::new(move |_, ()| {
            f(1);
            f(n)
        });
        co.resume(()).as_return().expect("the coroutine returns")
    }
}

pub fn access_group() -> Group {
    Group {
        name: "access",
        op: "`X.set(X.get() + 1)` on a `Cell<u64>`",
        baselines: vec!["std const", "std lazy"],
        ops_per_rep: 500_000,
        ops_per_count: 100_000,
        cases: vec![
            Case::new("loop only", on_thread(loop_only)),
            Case::new("std const", on_thread(std_const)),
            Case::new("std lazy", on_thread(std_lazy)),
            Case::new("co const, coroutine", in_coroutine(co_const)),
            Case::new("co const, Locals::enter", in_locals(co_const)),
            Case::new("co const, thread", on_thread(co_const)),
            Case::new("co lazy, coroutine", in_coroutine(co_lazy)),
            Case::new("co lazy, Locals::enter", in_locals(co_lazy)),
            Case::new("co lazy, thread", on_thread(co_lazy)),
            Case::new("co lazy, one with, thread", on_thread(co_lazy_one_with)),
            Case::new("model: lazy, loaded offset", on_thread(model_loaded_offset)),
            Case::new(
                "model: lazy, constant offset",
                on_thread(model_const_offset),
            ),
            Case::new("tokio task_local", tokio_task_local),
            Case::new("may coroutine_local", may_coroutine_local),
            Case::new("pthread key", pthread_specific),
            Case::new("Mutex<HashMap>", mutex_map),
        ],
    }
}

// ---------------------------------------------------------------------------
// Switch: a resume + suspend round trip.
// ---------------------------------------------------------------------------

/// A bare `context` coroutine that jumps back to whoever resumed it, forever.
extern "C" fn ping_pong(mut transfer: Transfer) -> ! {
    loop {
        // SAFETY: `transfer.context` is the execution that just resumed us,
        // suspended in its own `resume` and not resumed since.
        transfer = unsafe { transfer.context.resume(0) };
    }
}

#[inline(never)]
pub fn switch_context(n: u64) -> Duration {
    let stack = ProtectedFixedSizeStack::new(DEFAULT_STACK_SIZE).expect("a stack");
    // SAFETY: the stack outlives the context: the context is dropped (never
    // resumed again) at the end of this function, before the stack.
    let mut ctx = unsafe { Context::new(&stack, ping_pong) };
    // SAFETY: `ctx` is suspended (new, then after each jump back) and is
    // resumed once per suspension; `ping_pong` only jumps back.
    ctx = unsafe { ctx.resume(0) }.context;
    let start = Instant::now();
    let mut left = n;
    while left != 0 {
        // SAFETY: as above.
        ctx = unsafe { ctx.resume(0) }.context;
        compiler_fence(Ordering::SeqCst);
        left -= 1;
        co_local_benches::harness::opaque(&mut left);
    }
    let elapsed = start.elapsed();
    // `ping_pong`'s frame owns nothing: abandoning it (the context is a
    // plain pointer) leaks nothing; the stack is unmapped after it.
    let _ = ctx;
    drop(stack);
    elapsed
}

#[inline(never)]
pub fn switch_co_runtime(n: u64) -> Duration {
    let mut co = Coroutine::<(), (), ()>::new(|y, ()| loop {
        y.suspend(());
    });
    co.resume(());
    ops(n, || {
        black_box(co.resume(()));
    })
}

#[inline(never)]
pub fn switch_co_runtime_access(n: u64) -> Duration {
    let mut co = Coroutine::<(), (), ()>::new(|y, ()| loop {
        CO_CONST.set(CO_CONST.get() + 1);
        y.suspend(());
    });
    co.resume(());
    ops(n, || {
        black_box(co.resume(()));
        CO_CONST.set(CO_CONST.get() + 1);
    })
}

#[inline(never)]
pub fn switch_corosensei(n: u64) -> Duration {
    let mut co = corosensei::Coroutine::<(), (), ()>::new(|y, ()| loop {
        y.suspend(());
    });
    co.resume(());
    ops(n, || {
        black_box(co.resume(()));
    })
}

/// corosensei with its own co_local block, switched with `Locals::resume`:
/// what a runtime we don't own pays for coroutine-local values.
#[inline(never)]
pub fn switch_corosensei_resume(n: u64) -> Duration {
    let mut co = corosensei::Coroutine::<(), (), ()>::new(|y, ()| loop {
        y.suspend(());
    });
    let mut locals = Locals::new();
    locals.resume(|| co.resume(()));
    ops(n, || {
        black_box(locals.resume(|| co.resume(())));
    })
}

/// The same with a naive `Locals::enter` around each switch (not enough if
/// the coroutine suspends inside an `enter` of its own: the comparison only).
#[inline(never)]
pub fn switch_corosensei_enter(n: u64) -> Duration {
    let mut co = corosensei::Coroutine::<(), (), ()>::new(|y, ()| loop {
        y.suspend(());
    });
    let mut locals = Locals::new();
    locals.enter(|| co.resume(()));
    ops(n, || {
        black_box(locals.enter(|| co.resume(())));
    })
}

std::thread_local! {
    static FLOOR: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The floor of any wrapper that keeps a per-thread pointer per coroutine:
/// a plain `thread_local!` saved, set and restored around each switch, with
/// no check of any kind (not co_local; not sound as a wrapper).
#[inline(never)]
pub fn switch_corosensei_floor(n: u64) -> Duration {
    let mut co = corosensei::Coroutine::<(), (), ()>::new(|y, ()| loop {
        y.suspend(());
    });
    co.resume(());
    let mine = black_box(0x1000_usize);
    ops(n, || {
        let saved = FLOOR.replace(mine);
        black_box(co.resume(()));
        FLOOR.set(saved);
    })
}

pub fn switch_group() -> Group {
    Group {
        name: "switch",
        op: "resume + suspend round trip",
        baselines: vec!["context"],
        ops_per_rep: 100_000,
        ops_per_count: 20_000,
        cases: vec![
            Case::new("context", switch_context),
            Case::new("co_runtime", switch_co_runtime),
            Case::new("co_runtime + access each side", switch_co_runtime_access),
            Case::new("corosensei", switch_corosensei),
            Case::new("corosensei + Locals::resume", switch_corosensei_resume),
            Case::new("corosensei + Locals::enter", switch_corosensei_enter),
            Case::new("corosensei + a thread_local! swap", switch_corosensei_floor),
        ],
    }
}

// ---------------------------------------------------------------------------
// Creation: create + run to completion + drop.
// ---------------------------------------------------------------------------

/// A bare `context` coroutine that returns at once: jumps back for the last
/// time; it is never resumed again.
extern "C" fn run_once(transfer: Transfer) -> ! {
    // SAFETY: `transfer.context` is the execution that resumed us, suspended
    // in its `resume`.
    unsafe { transfer.context.resume(1) };
    unreachable!("a finished bare coroutine was resumed")
}

#[inline(always)]
fn context_once(stack: &ProtectedFixedSizeStack) {
    // SAFETY: the stack outlives the context, dropped unresumed at the end
    // of this block after `run_once` jumped back.
    let transfer = unsafe { Context::new(stack, run_once).resume(0) };
    black_box(transfer.data);
}

#[inline(never)]
pub fn create_context_fresh(n: u64) -> Duration {
    ops(n, || {
        let stack = ProtectedFixedSizeStack::new(DEFAULT_STACK_SIZE).expect("a stack");
        context_once(&stack);
    })
}

#[inline(never)]
pub fn create_context_reused(n: u64) -> Duration {
    let stack = ProtectedFixedSizeStack::new(DEFAULT_STACK_SIZE).expect("a stack");
    ops(n, || context_once(&stack))
}

#[inline(never)]
pub fn create_co_runtime(n: u64) -> Duration {
    ops(n, || {
        let mut co = Coroutine::<(), (), ()>::new(|_, ()| {});
        black_box(co.resume(()));
    })
}

#[inline(never)]
pub fn create_corosensei_fresh(n: u64) -> Duration {
    ops(n, || {
        let stack = corosensei::stack::DefaultStack::new(DEFAULT_STACK_SIZE).expect("a stack");
        let mut co = corosensei::Coroutine::<(), (), (), _>::with_stack(stack, |_, ()| {});
        black_box(co.resume(()));
    })
}

#[inline(never)]
pub fn create_corosensei_reused(n: u64) -> Duration {
    // corosensei's way to reuse a stack: `into_stack` once the coroutine
    // is done.
    let mut stack =
        Some(corosensei::stack::DefaultStack::new(DEFAULT_STACK_SIZE).expect("a stack"));
    ops(n, || {
        let stack_in = stack.take().expect("the stack is back");
        let mut co = corosensei::Coroutine::<(), (), (), _>::with_stack(stack_in, |_, ()| {});
        black_box(co.resume(()));
        stack = Some(co.into_stack());
    })
}

#[inline(never)]
pub fn locals_new_drop(n: u64) -> Duration {
    ops(n, || drop(black_box(Locals::new())))
}

/// A coroutine that makes one value with drop glue: create + run + drop.
#[inline(never)]
pub fn create_co_runtime_access(n: u64) -> Duration {
    ops(n, || {
        let mut co = Coroutine::<(), (), ()>::new(|_, ()| {
            CO_LAZY_VEC.with_borrow(|v| black_box(v.len()));
        });
        black_box(co.resume(()));
    })
}

pub fn creation_group() -> Group {
    Group {
        name: "creation",
        op: "create + run to completion + drop",
        baselines: vec!["context, fresh stack"],
        ops_per_rep: 2_000,
        ops_per_count: 2_000,
        cases: vec![
            Case::new("context, fresh stack", create_context_fresh),
            Case::new("context, reused stack", create_context_reused),
            Case::new("co_runtime", create_co_runtime),
            Case::new("corosensei, fresh stack", create_corosensei_fresh),
            Case::new("corosensei, reused stack", create_corosensei_reused),
            Case::new("Locals::new + drop", locals_new_drop),
        ],
    }
}

// ---------------------------------------------------------------------------
// Blocks: what a block's whole life costs when it uses one value, whatever
// the binary declares (the `many_drop` binary runs the same cases with 2,000
// more declarations).
// ---------------------------------------------------------------------------

#[inline(never)]
pub fn locals_access_const_vec(n: u64) -> Duration {
    ops(n, || {
        let mut block = Locals::new();
        block.enter(|| CO_CONST_VEC.with_borrow(|v| black_box(v.len())));
    })
}

#[inline(never)]
pub fn locals_access_lazy_vec(n: u64) -> Duration {
    ops(n, || {
        let mut block = Locals::new();
        block.enter(|| CO_LAZY_VEC.with_borrow(|v| black_box(v.len())));
    })
}

/// The cases of [`blocks_group`], by name: the `instructions` and `ratios`
/// targets run each one in this binary and in `many_drop`.
pub const BLOCK_CASES: [&str; 4] = [
    "Locals::new + drop",
    "Locals::new + const RefCell<Vec> access + drop",
    "Locals::new + lazy RefCell<Vec> access + drop",
    "co_runtime: create + lazy RefCell<Vec> access + drop",
];

/// A block for work handed to another thread, made where the work is made
/// (no declaration of this binary inherits, so both copy nothing), entered
/// once, dropped: `SendLocals` against `Locals`.
#[inline(never)]
pub fn send_locals_inherit_enter(n: u64) -> Duration {
    ops(n, || {
        let mut block = SendLocals::inherit();
        block.enter(|| CO_CONST.set(black_box(CO_CONST.get() + 1)));
    })
}

#[inline(never)]
pub fn locals_inherit_enter(n: u64) -> Duration {
    ops(n, || {
        let mut block = Locals::inherit();
        block.enter(|| CO_CONST.set(black_box(CO_CONST.get() + 1)));
    })
}

pub fn send_locals_group() -> Group {
    Group {
        name: "send-locals",
        op: "make a block where work is made (`inherit`), enter it once, drop it",
        baselines: vec!["Locals::inherit + enter + drop"],
        ops_per_rep: 20_000,
        ops_per_count: 20_000,
        cases: vec![
            Case::new("Locals::inherit + enter + drop", locals_inherit_enter),
            Case::new(
                "SendLocals::inherit + enter + drop",
                send_locals_inherit_enter,
            ),
        ],
    }
}

pub fn blocks_group() -> Group {
    Group {
        name: "blocks",
        op: "a block's life: make it, use one value (or none), drop it",
        baselines: vec!["Locals::new + drop"],
        ops_per_rep: 20_000,
        ops_per_count: 20_000,
        cases: vec![
            Case::new(BLOCK_CASES[0], locals_new_drop),
            Case::new(BLOCK_CASES[1], locals_access_const_vec),
            Case::new(BLOCK_CASES[2], locals_access_lazy_vec),
            Case::new(BLOCK_CASES[3], create_co_runtime_access),
        ],
    }
}

// ---------------------------------------------------------------------------
// Async tasks: the cost of a poll with the task's own values, and of an
// access inside a task.
// ---------------------------------------------------------------------------

/// A future that is never ready and does nothing but hide what it does from
/// the optimiser: it might read or write any memory, the current-block
/// pointer included, so a wrapper's switch around it cannot be folded away.
/// What is left of a poll is the wrapper's own work.
struct Pending;

impl Future for Pending {
    type Output = ();

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        black_box(cx.waker());
        Poll::Pending
    }
}

/// Polls `fut` `n` times. Generic and `#[inline(never)]`: one loop of its
/// own for each wrapper.
#[inline(never)]
fn poll_loop<F: Future>(n: u64, mut fut: Pin<&mut F>) -> Duration {
    let mut cx = TaskContext::from_waker(Waker::noop());
    ops(n, || {
        black_box(fut.as_mut().poll(&mut cx).is_pending());
    })
}

pub fn poll_bare(n: u64) -> Duration {
    poll_loop(n, pin!(Pending))
}

pub fn poll_with_locals(n: u64) -> Duration {
    poll_loop(n, pin!(WithLocals::new(Pending)))
}

pub fn poll_local_with_locals(n: u64) -> Duration {
    poll_loop(n, pin!(LocalWithLocals::new(Pending)))
}

/// The naive wrapper: `Locals::enter` around each poll, thread-bound, with
/// no care for what a task leaves behind when it moves.
struct Entered<F> {
    locals: Locals,
    inner: F,
}

impl<F: Future + Unpin> Future for Entered<F> {
    type Output = F::Output;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.locals.enter(|| Pin::new(&mut this.inner).poll(cx))
    }
}

pub fn poll_locals_enter(n: u64) -> Duration {
    poll_loop(
        n,
        pin!(Entered {
            locals: Locals::new(),
            inner: Pending,
        }),
    )
}

/// `scope_future` with one key, the counterpart of tokio's `scope`: the
/// value goes in and out of the current block (the thread's) at each poll.
pub fn poll_co_scope_future_1(n: u64) -> Duration {
    poll_loop(n, pin!(CO_CONST.scope_future(0, Pending)))
}

pub fn poll_tokio_scope_1(n: u64) -> Duration {
    poll_loop(n, pin!(TOKIO_CELL.scope(Cell::new(0), Pending)))
}

pub fn poll_tokio_scope_10(n: u64) -> Duration {
    let c = || Cell::new(0);
    let fut = TOKIO_0.scope(
        c(),
        TOKIO_1.scope(
            c(),
            TOKIO_2.scope(
                c(),
                TOKIO_3.scope(
                    c(),
                    TOKIO_4.scope(
                        c(),
                        TOKIO_5.scope(
                            c(),
                            TOKIO_6.scope(
                                c(),
                                TOKIO_7.scope(c(), TOKIO_8.scope(c(), TOKIO_9.scope(c(), Pending))),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    );
    poll_loop(n, pin!(fut))
}

/// Runs the loop `run` in one poll of a task with its own values.
fn in_task(run: fn(u64) -> Duration) -> impl Fn(u64) -> Duration {
    move |n| {
        let task = WithLocals::new(std::future::poll_fn(move |_| Poll::Ready(run(n))));
        let mut cx = TaskContext::from_waker(Waker::noop());
        match pin!(task).poll(&mut cx) {
            Poll::Ready(time) => time,
            Poll::Pending => unreachable!("the task is ready at once"),
        }
    }
}

/// tokio's `task_local!` inside a task's `scope`, polled as a future.
fn tokio_in_task(n: u64) -> Duration {
    let task = TOKIO_CELL.scope(
        Cell::new(0),
        std::future::poll_fn(move |_| {
            tokio_loop(1);
            Poll::Ready(tokio_loop(n))
        }),
    );
    let mut cx = TaskContext::from_waker(Waker::noop());
    match pin!(task).poll(&mut cx) {
        Poll::Ready(time) => time,
        Poll::Pending => unreachable!("the task is ready at once"),
    }
}

pub fn async_group() -> Group {
    Group {
        name: "async",
        op: "one poll of a future that is never ready, bare or wrapped with its task's values",
        baselines: vec!["bare poll"],
        ops_per_rep: 500_000,
        ops_per_count: 100_000,
        cases: vec![
            Case::new("loop only", on_thread(loop_only)),
            Case::new("bare poll", poll_bare),
            Case::new("WithLocals", poll_with_locals),
            Case::new("LocalWithLocals", poll_local_with_locals),
            Case::new("Locals::enter wrapper", poll_locals_enter),
            Case::new("co_local scope_future, 1 key", poll_co_scope_future_1),
            Case::new("tokio scope, 1 key", poll_tokio_scope_1),
            Case::new("tokio scope, 10 keys", poll_tokio_scope_10),
        ],
    }
}

pub fn async_access_group() -> Group {
    Group {
        name: "async-access",
        op: "`X.set(X.get() + 1)` on a `Cell<u64>` inside a polled task",
        baselines: vec!["tokio task_local"],
        ops_per_rep: 500_000,
        ops_per_count: 100_000,
        cases: vec![
            Case::new("loop only", on_thread(loop_only)),
            Case::new("co const, WithLocals", in_task(co_const)),
            Case::new("co lazy, WithLocals", in_task(co_lazy)),
            Case::new("tokio task_local", tokio_in_task),
        ],
    }
}

/// Every group of this module but the live-coroutine one.
pub fn groups() -> Vec<Group> {
    vec![
        access_group(),
        switch_group(),
        creation_group(),
        blocks_group(),
        send_locals_group(),
        async_group(),
        async_access_group(),
    ]
}

// ---------------------------------------------------------------------------
// Scaling: switches with many live suspended coroutines.
// ---------------------------------------------------------------------------

/// Stack size of the live coroutines.
pub const LIVE_STACK: usize = 16 * 1024;

type Live = Vec<Coroutine<(), (), ()>>;

std::thread_local! {
    /// Suspended coroutines by count, made once per process.
    static LIVE: RefCell<HashMap<usize, Live>> = RefCell::new(HashMap::new());
}

/// `count` coroutines of [`LIVE_STACK`] bytes, each resumed once: suspended.
pub fn make_live(count: usize) -> Live {
    (0..count)
        .map(|_| {
            let mut co = Coroutine::<(), (), ()>::with_stack_size(LIVE_STACK, |y, ()| loop {
                y.suspend(());
            });
            co.resume(());
            co
        })
        .collect()
}

fn with_live<R>(count: usize, f: impl FnOnce(&mut Live) -> R) -> R {
    LIVE.with(|live| {
        let mut live = live.borrow_mut();
        f(live.entry(count).or_insert_with(|| make_live(count)))
    })
}

/// Round trips into each of `count` live coroutines in turn.
#[inline(never)]
fn live_round_robin_loop(cos: &mut Live, n: u64) -> Duration {
    let mut i = 0;
    ops(n, || {
        black_box(cos[i].resume(()));
        i += 1;
        if i == cos.len() {
            i = 0;
        }
    })
}

/// Round trips into the first of `count` live coroutines only.
#[inline(never)]
fn live_one_hot_loop(cos: &mut Live, n: u64) -> Duration {
    let co = &mut cos[0];
    ops(n, || {
        black_box(co.resume(()));
    })
}

/// Bare `context` ping-pong coroutines on stacks of [`LIVE_STACK`] bytes,
/// each started: the control of the live group (same memory pattern, no
/// co_runtime bookkeeping).
pub struct LiveContexts {
    /// `Some` except during a switch.
    contexts: Vec<Option<Context>>,
    /// Declared after `contexts`: unmapped after them.
    _stacks: Vec<ProtectedFixedSizeStack>,
}

fn make_live_contexts(count: usize) -> LiveContexts {
    let stacks: Vec<_> = (0..count)
        .map(|_| ProtectedFixedSizeStack::new(LIVE_STACK).expect("a stack"))
        .collect();
    let contexts = stacks
        .iter()
        .map(|stack| {
            // SAFETY: the stack outlives the context (`LiveContexts` drops
            // the contexts first); `ping_pong` only jumps back.
            let ctx = unsafe { Context::new(stack, ping_pong) };
            // SAFETY: a new context, resumed once.
            Some(unsafe { ctx.resume(0) }.context)
        })
        .collect();
    LiveContexts {
        contexts,
        _stacks: stacks,
    }
}

std::thread_local! {
    static LIVE_CONTEXTS: RefCell<HashMap<usize, LiveContexts>> = RefCell::new(HashMap::new());
}

#[inline(never)]
fn live_contexts_round_robin_loop(live: &mut LiveContexts, n: u64) -> Duration {
    let mut i = 0;
    let len = live.contexts.len();
    ops(n, || {
        let ctx = live.contexts[i].take().expect("suspended");
        // SAFETY: `ctx` is suspended in `ping_pong` and resumed once.
        live.contexts[i] = Some(unsafe { ctx.resume(0) }.context);
        i += 1;
        if i == len {
            i = 0;
        }
    })
}

fn live_contexts_round_robin(count: usize, n: u64) -> Duration {
    LIVE_CONTEXTS.with(|live| {
        let mut live = live.borrow_mut();
        let live = live
            .entry(count)
            .or_insert_with(|| make_live_contexts(count));
        live_contexts_round_robin_loop(live, n)
    })
}

/// The most coroutines of [`LIVE_STACK`] bytes that fit, up to `want`, with
/// as many bare contexts beside them: each stack is two mappings (the stack
/// and its guard page). Raises `vm.max_map_count` first if it can.
pub fn live_capacity(want: usize) -> usize {
    let margin = 1_000;
    let limit =
        co_local_benches::system::raise_max_map_count(4 * want + 4 * margin).unwrap_or(65_530);
    let used = co_local_benches::system::map_count();
    want.min(limit.saturating_sub(used + margin) / 4)
}

/// Round trips with `small` and with `large` live suspended coroutines, and
/// the same with bare `context` coroutines.
pub fn live_group(small: usize, large: usize) -> Group {
    let name = |n: usize, what: &str| -> &'static str {
        Box::leak(format!("{n} live, {what}").into_boxed_str())
    };
    let rr = |count: usize| move |n| with_live(count, |cos| live_round_robin_loop(cos, n));
    let hot = |count: usize| move |n| with_live(count, |cos| live_one_hot_loop(cos, n));
    let ctx = |count: usize| move |n| live_contexts_round_robin(count, n);
    Group {
        name: "live",
        op: "resume + suspend round trip among live suspended coroutines (16 KiB stacks)",
        baselines: vec![
            name(small, "round robin"),
            name(small, "context round robin"),
        ],
        ops_per_rep: 200_000,
        ops_per_count: 20_000,
        cases: vec![
            Case::new(name(small, "round robin"), rr(small)),
            Case::new(name(large, "round robin"), rr(large)),
            Case::new(name(small, "one hot"), hot(small)),
            Case::new(name(large, "one hot"), hot(large)),
            Case::new(name(small, "context round robin"), ctx(small)),
            Case::new(name(large, "context round robin"), ctx(large)),
        ],
    }
}
