//! Coroutines and blocks that meet the end of their thread or process
//! (SPEC.md, "Soundness"): std destroys a thread's thread-locals newest
//! first, so a suspended coroutine kept in a thread-local may outlive
//! thread-locals its frames refer to, and `std::process::exit` runs the
//! thread-local destructors of the thread that calls it, on its stack.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};

use co_local::{co_local, Locals};
use std::sync::Mutex;

use co_runtime::{stack_stats, Coroutine};

type Co = Coroutine<(), (), ()>;

/// Held by the tests that count the process's mapped stacks.
static STACKS: Mutex<()> = Mutex::new(());

/// Counts the times a frame of a suspended coroutine was unwound.
static UNWOUND: AtomicU32 = AtomicU32::new(0);

/// On a coroutine's stack, inside another thread-local's `with`: unwinding
/// it reads that thread-local's value.
struct ReadsOnUnwind<'a>(&'a String);

impl Drop for ReadsOnUnwind<'_> {
    fn drop(&mut self) {
        assert_eq!(self.0, "newer thread-local");
        UNWOUND.fetch_add(1, Ordering::SeqCst);
    }
}

std::thread_local! {
    /// Holds suspended coroutines; first used before the thread's first
    /// coroutine, so it is destroyed after co_runtime's own thread-locals.
    static OLDER_HOLDER: RefCell<Vec<Co>> = const { RefCell::new(Vec::new()) };
    /// First used by a coroutine: destroyed before `OLDER_HOLDER`.
    static NEWER: String = String::from("newer thread-local");
    /// A block kept in a thread-local, entered by a coroutine that suspends
    /// inside: destroyed before `OLDER_HOLDER`.
    static NEWER_LOCALS: RefCell<Locals> = RefCell::new(Locals::new());
}

co_local! {
    static VALUE_DROPS: Cell<Option<DropCount>> = const { Cell::new(None) };
}

struct DropCount(&'static AtomicU32);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Hole 4: a suspended coroutine whose frames hold a reference into a
/// thread-local destroyed before it is leaked at thread exit, not unwound.
#[test]
fn a_suspended_coroutine_in_an_older_thread_local_is_leaked_not_unwound() {
    let _stacks = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    UNWOUND.store(0, Ordering::SeqCst);
    let mapped = stack_stats().process_mapped;
    std::thread::spawn(|| {
        OLDER_HOLDER.with_borrow(|held| assert!(held.is_empty()));
        let mut co = Co::new(|y, ()| {
            NEWER.with(|s| {
                let _reads = ReadsOnUnwind(s);
                y.suspend(());
            });
        });
        co.resume(());
        OLDER_HOLDER.with_borrow_mut(|held| held.push(co));
    })
    .join()
    .unwrap();
    assert_eq!(
        UNWOUND.load(Ordering::SeqCst),
        0,
        "the coroutine was unwound after the thread-local it refers to"
    );
    assert_eq!(
        stack_stats().process_mapped,
        mapped + 1,
        "its stack is leaked, never unmapped or reused"
    );
}

/// The same with a `Locals` kept in a newer thread-local that the coroutine
/// entered and suspended inside: the block is dropped first, while the
/// coroutine still has it current, so it is kept (the coroutine's switch
/// remembers it). The coroutine is then leaked, and with it the last thing
/// that could reach the block: its values are destroyed then, once.
#[test]
fn a_block_dropped_at_thread_exit_while_a_suspended_coroutine_has_it_current() {
    static DROPS: AtomicU32 = AtomicU32::new(0);
    let _stacks = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(|| {
        OLDER_HOLDER.with_borrow(|held| assert!(held.is_empty()));
        let mut co = Co::new(|y, ()| {
            NEWER_LOCALS.with_borrow_mut(|locals| {
                locals.enter(|| {
                    VALUE_DROPS.set(Some(DropCount(&DROPS)));
                    y.suspend(());
                });
            });
        });
        co.resume(());
        OLDER_HOLDER.with_borrow_mut(|held| held.push(co));
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
}

/// A coroutine kept in a thread-local first used after the thread's first
/// coroutine is destroyed before co_runtime's marker: it is unwound as
/// usual, and its values are destroyed.
#[test]
fn a_suspended_coroutine_in_a_newer_thread_local_is_unwound() {
    static DROPS: AtomicU32 = AtomicU32::new(0);
    std::thread_local! {
        static NEWER_HOLDER: RefCell<Vec<Co>> = const { RefCell::new(Vec::new()) };
    }
    let _stacks = STACKS.lock().unwrap_or_else(|e| e.into_inner());
    let mapped = stack_stats().process_mapped;
    std::thread::spawn(|| {
        let mut first = Co::new(|_, ()| ());
        first.resume(());
        let mut co = Co::new(|y, ()| {
            VALUE_DROPS.set(Some(DropCount(&DROPS)));
            y.suspend(());
        });
        co.resume(());
        NEWER_HOLDER.with_borrow_mut(|held| held.push(co));
    })
    .join()
    .unwrap();
    assert_eq!(DROPS.load(Ordering::SeqCst), 1);
    assert_eq!(stack_stats().process_mapped, mapped);
}

std::thread_local! {
    static RUNNING: RefCell<Option<Co>> = const { RefCell::new(None) };
}

/// `std::process::exit` inside a running coroutine kept in a thread-local:
/// exit runs the thread-local destructors on the coroutine's own stack, and
/// dropping the running coroutine must not unmap that stack. Run in a child
/// process, which must exit with the status given to `exit`.
#[cfg(unix)]
#[test]
fn process_exit_inside_a_running_coroutine_kept_in_a_thread_local() {
    use std::process::Command;

    const CHILD: &str = "CO_LOCAL_EXIT_CHILD";
    const NAME: &str = "process_exit_inside_a_running_coroutine_kept_in_a_thread_local";
    if std::env::var_os(CHILD).is_some() {
        let co = Co::new(|_, ()| {
            VALUE_DROPS.with(|_| ());
            std::process::exit(7);
        });
        RUNNING.set(Some(co));
        RUNNING.with_borrow_mut(|co| co.as_mut().unwrap().resume(()));
        unreachable!("the coroutine exits the process");
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(7),
        "{:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
