//! Unit tests of blocks and the access path over a hand-made registry: they
//! need no linker support, so they also run under Miri
//! (`cargo +nightly miri test -p co_local --lib`).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::error::{AccessError, AccessErrorKind};
use crate::key::LocalKey;
use crate::locals::Locals;
use crate::registry::{Declaration, SendFallback as _, SendProbe};
use crate::storage::swap_current;
use crate::task::{LocalWithLocals, WithLocals};

#[repr(align(4096))]
struct Page([u8; 4096]);

struct Zst;

/// Counts its drops in a thread-local counter.
struct Tracked(u32);
impl Drop for Tracked {
    fn drop(&mut self) {
        TOTAL_DROPS.fetch_add(u64::from(self.0), Ordering::SeqCst);
        // At thread exit, this thread-local may be gone already.
        let _ = DROPS.try_with(|d| d.borrow_mut().push(self.0));
        // A destructor sees its own key destroyed and others still usable.
        SEEN_OWN.set(Some(TRACKED.try_with(|_| ()).is_err()));
        let _ = COUNT.try_with(|c| c.set(c.get() + 1000));
    }
}

static TOTAL_DROPS: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    static DROPS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static SEEN_OWN: Cell<Option<bool>> = const { Cell::new(None) };
    static INITS: Cell<u32> = const { Cell::new(0) };
}

fn lazy_count() -> Cell<u64> {
    INITS.set(INITS.get() + 1);
    Cell::new(1000)
}

macro_rules! decl {
    ($key:ident: $t:ty, lazy = $lazy:expr) => {
        // SAFETY: each declaration is made with its own key (same type and
        // `lazy`), and this list is the unit tests' registry.
        unsafe {
            Declaration::private_new::<$t>(
                &$key,
                stringify!($key),
                module_path!(),
                $lazy,
                false,
                <SendProbe<$t>>::PROOF,
            )
        }
    };
}

pub(super) static DECLARATIONS: [Declaration; 9] = [
    decl!(COUNT: Cell<u64>, lazy = false),
    decl!(LAZY_COUNT: Cell<u64>, lazy = true),
    decl!(NAMES: RefCell<Vec<String>>, lazy = true),
    decl!(TRACKED: RefCell<Option<Tracked>>, lazy = false),
    decl!(PAGE: Page, lazy = true),
    decl!(NOTHING: Zst, lazy = true),
    decl!(BYTE: Cell<u8>, lazy = false),
    decl!(SHARED: RefCell<Option<Rc<u32>>>, lazy = true),
    decl!(RAW: Cell<*const u8>, lazy = false),
];

static COUNT: LocalKey<Cell<u64>> = // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[0],
            || Cell::new(7),
            false,
            crate::__private::not_inherited,
            <SendProbe<Cell<u64>>>::PROOF,
        )
    };
static LAZY_COUNT: LocalKey<Cell<u64>> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[1],
            lazy_count,
            true,
            crate::__private::not_inherited,
            <SendProbe<Cell<u64>>>::PROOF,
        )
    };
static NAMES: LocalKey<RefCell<Vec<String>>> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[2],
            || RefCell::new(Vec::new()),
            true,
            crate::__private::not_inherited,
            <SendProbe<RefCell<Vec<String>>>>::PROOF,
        )
    };
static TRACKED: LocalKey<RefCell<Option<Tracked>>> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[3],
            || RefCell::new(None),
            false,
            crate::__private::not_inherited,
            <SendProbe<RefCell<Option<Tracked>>>>::PROOF,
        )
    };
static PAGE: LocalKey<Page> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[4],
            || Page([9; 4096]),
            true,
            crate::__private::not_inherited,
            <SendProbe<Page>>::PROOF,
        )
    };
static NOTHING: LocalKey<Zst> = // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[5],
            || Zst,
            true,
            crate::__private::not_inherited,
            <SendProbe<Zst>>::PROOF,
        )
    };
static BYTE: LocalKey<Cell<u8>> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[6],
            || Cell::new(0xab),
            false,
            crate::__private::not_inherited,
            <SendProbe<Cell<u8>>>::PROOF,
        )
    };
static SHARED: LocalKey<RefCell<Option<Rc<u32>>>> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[7],
            || RefCell::new(Some(Rc::new(1))),
            true,
            crate::__private::not_inherited,
            <SendProbe<RefCell<Option<Rc<u32>>>>>::PROOF,
        )
    };
static RAW: LocalKey<Cell<*const u8>> =
    // SAFETY: the key of its own declaration, in the registry.
    unsafe {
        LocalKey::private_new(
            &DECLARATIONS[8],
            || Cell::new(std::ptr::null()),
            false,
            crate::__private::not_inherited,
            <SendProbe<Cell<*const u8>>>::PROOF,
        )
    };

#[test]
fn constants_are_in_place_and_blocks_are_isolated() {
    let mut a = Locals::new();
    let mut b = Locals::new();
    a.enter(|| {
        assert_eq!(COUNT.get(), 7);
        assert_eq!(BYTE.get(), 0xab);
        COUNT.set(1);
    });
    b.enter(|| COUNT.set(2));
    COUNT.set(3);
    assert_eq!(a.enter(|| COUNT.get()), 1);
    assert_eq!(b.enter(|| COUNT.get()), 2);
    assert_eq!(COUNT.get(), 3);
}

#[test]
fn lazy_values_are_made_once_per_block_on_first_access() {
    let before = INITS.get();
    let mut a = Locals::new();
    let mut b = Locals::new();
    assert_eq!(INITS.get(), before);
    a.enter(|| {
        assert_eq!(LAZY_COUNT.get(), 1000);
        LAZY_COUNT.set(1);
        assert_eq!(LAZY_COUNT.get(), 1);
    });
    b.enter(|| LAZY_COUNT.set(5)); // `set` skips the initialiser
    assert_eq!(INITS.get(), before + 1);
    assert_eq!(b.enter(|| LAZY_COUNT.get()), 5);
    a.enter(|| NAMES.with_borrow_mut(|n| n.push("a".into())));
    assert_eq!(a.enter(|| NAMES.take()), ["a"]);
}

#[test]
fn alignment_and_zero_sized_values() {
    let mut blocks: Vec<Locals> = (0..3).map(|_| Locals::new()).collect();
    for block in &mut blocks {
        block.enter(|| {
            PAGE.with(|p| {
                assert_eq!(std::ptr::from_ref(p) as usize % 4096, 0);
                assert_eq!(p.0[4095], 9);
            });
            NOTHING.with(|_| ());
        });
    }
}

#[test]
fn destruction_drops_each_value_once_with_its_block_current() {
    DROPS.with_borrow_mut(Vec::clear);
    let mut block = Locals::new();
    block.enter(|| {
        TRACKED.set(Some(Tracked(1)));
        COUNT.set(0);
    });
    SEEN_OWN.set(None);
    let mut untouched = Locals::new();
    untouched.enter(|| ());
    drop(untouched);
    assert!(DROPS.with_borrow(Vec::is_empty));
    drop(block);
    assert_eq!(DROPS.take(), [1]);
    assert_eq!(SEEN_OWN.get(), Some(true));
    // The thread's own COUNT was not touched by the dying block's destructor.
    COUNT.set(5);
    assert_eq!(COUNT.get(), 5);
}

#[test]
fn recycled_blocks_start_clean() {
    let before = INITS.get();
    for round in 0..100 {
        let mut block = Locals::new();
        block.enter(|| {
            assert_eq!(COUNT.get(), 7, "round {round}");
            assert_eq!(LAZY_COUNT.get(), 1000, "round {round}");
            assert!(NAMES.with_borrow(Vec::is_empty));
            assert!(TRACKED.with_borrow(Option::is_none));
            COUNT.set(round);
            LAZY_COUNT.set(round);
            NAMES.with_borrow_mut(|n| n.push(format!("{round}")));
            TRACKED.set(Some(Tracked(100)));
        });
    }
    assert_eq!(INITS.get(), before + 100);
}

#[test]
fn swap_current_switches_and_restores() {
    let mut a = Locals::new();
    COUNT.set(1);
    // SAFETY: `a` outlives the time its block is current, and the previous
    // block is restored before `a` is dropped.
    let prev = unsafe { swap_current(a.as_raw()) };
    COUNT.set(2);
    // SAFETY: `prev` was current before and its owner (the thread) is alive.
    let back = unsafe { swap_current(prev) };
    assert_eq!(back, a.as_raw());
    assert_eq!(COUNT.get(), 1);
    assert_eq!(a.enter(|| COUNT.get()), 2);
}

#[test]
fn panic_inside_enter_restores_the_previous_block() {
    let mut a = Locals::new();
    COUNT.set(10);
    let r = catch_unwind(AssertUnwindSafe(|| {
        a.enter(|| {
            COUNT.set(11);
            panic!("inside");
        })
    }));
    assert!(r.is_err());
    assert_eq!(COUNT.get(), 10);
}

#[test]
fn threads_have_their_own_blocks_destroyed_at_exit() {
    const MARK: u32 = 1 << 20;
    let before = TOTAL_DROPS.load(Ordering::SeqCst);
    let drops = std::thread::spawn(|| {
        TRACKED.set(Some(Tracked(MARK)));
        assert_eq!(COUNT.get(), 7);
        COUNT.set(8);
        let mut inner = Locals::new();
        inner.enter(|| assert_eq!(COUNT.get(), 7));
        DROPS.take()
    })
    .join()
    .unwrap();
    assert!(drops.is_empty(), "nothing dropped before thread exit");
    let after = TOTAL_DROPS.load(Ordering::SeqCst);
    // Other tests may drop small values concurrently; the mark is unique.
    assert_eq!(
        (after - before) >> 20,
        1,
        "the thread's value dropped once at exit"
    );
    assert_eq!(COUNT.get(), 7, "this thread's copy is its own");
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = futures::task::noop_waker();
    Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

/// Pending once, then ready: a task that suspends at one `.await`.
struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn the_probe_tells_which_types_are_send() {
    assert!(COUNT.declaration().is_send());
    assert!(TRACKED.declaration().is_send());
    assert!(!SHARED.declaration().is_send());
    assert!(!RAW.declaration().is_send());
}

#[test]
fn send_task_blocks_refuse_values_that_are_not_send() {
    let mut task = WithLocals::new(async {});
    task.with_locals(|| {
        assert_eq!(COUNT.get(), 7);
        assert_eq!(
            SHARED.try_with(|_| ()),
            Err(AccessError::new(AccessErrorKind::NotSend))
        );
        assert_eq!(
            RAW.try_with(Cell::get),
            Err(AccessError::new(AccessErrorKind::NotSend))
        );
        let panic = catch_unwind(|| SHARED.with_borrow(|_| ())).unwrap_err();
        let msg = panic.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("::SHARED`") && msg.contains("not `Send`"),
            "{msg}"
        );
        let panic = catch_unwind(|| RAW.set(std::ptr::null())).unwrap_err();
        assert!(panic.downcast_ref::<String>().unwrap().contains("::RAW`"));
    })
    .unwrap();
    // Everywhere else, they are reachable.
    assert_eq!(SHARED.with_borrow(|s| s.as_deref().copied()), Some(1));
    let mut local = LocalWithLocals::new(async {});
    local
        .with_locals(|| {
            SHARED.set(Some(Rc::new(5)));
            assert_eq!(SHARED.with_borrow(|s| s.as_deref().copied()), Some(5));
            assert!(RAW.get().is_null());
        })
        .unwrap();
    Locals::new().enter(|| assert!(SHARED.try_with(|_| ()).is_ok()));
}

#[test]
fn task_values_last_across_polls_and_die_with_the_task() {
    DROPS.with_borrow_mut(Vec::clear);
    SEEN_OWN.set(None);
    let mut task = WithLocals::new(Box::pin(async {
        COUNT.set(COUNT.get() + 1);
        TRACKED.set(Some(Tracked(3)));
        YieldOnce(false).await;
        COUNT.get()
    }));
    task.with_locals(|| COUNT.set(40)).unwrap();
    assert_eq!(poll_once(&mut task), Poll::Pending);
    COUNT.set(0); // the thread's own
    assert_eq!(task.with_locals(|| COUNT.get()), Some(41));
    assert!(DROPS.with_borrow(Vec::is_empty));
    assert_eq!(poll_once(&mut task), Poll::Ready(41));
    // Destroyed on completion, with the task's block current.
    assert_eq!(DROPS.take(), [3]);
    assert_eq!(SEEN_OWN.get(), Some(true));
    assert_eq!(task.with_locals(|| ()), None);
    assert_eq!(COUNT.get(), 0);
}

#[test]
fn a_dropped_pending_task_destroys_its_values() {
    DROPS.with_borrow_mut(Vec::clear);
    let mut task = LocalWithLocals::new(Box::pin(async {
        TRACKED.set(Some(Tracked(4)));
        YieldOnce(false).await;
    }));
    assert_eq!(poll_once(&mut task), Poll::Pending);
    assert!(DROPS.with_borrow(Vec::is_empty));
    drop(task);
    assert_eq!(DROPS.take(), [4]);
}

#[test]
fn a_task_block_stays_current_when_blocks_die_inside_it() {
    let mut outer = WithLocals::new(async {});
    outer.with_locals(|| COUNT.set(1)).unwrap();
    outer
        .with_locals(|| {
            // Blocks made and dropped inside: the thread's clock moves, and
            // the restores that follow check the task's block.
            let mut block = Locals::new();
            block.enter(|| COUNT.set(2));
            drop(block);
            assert_eq!(COUNT.get(), 1);
            let mut inner = WithLocals::new(Box::pin(async { COUNT.get() }));
            inner.with_locals(|| COUNT.set(3)).unwrap();
            assert_eq!(poll_once(&mut inner), Poll::Ready(3));
            assert_eq!(COUNT.get(), 1);
            let mut block = Locals::new();
            block.enter(|| {
                drop(WithLocals::new(async {}));
                COUNT.set(4);
            });
            assert_eq!(COUNT.get(), 1);
            assert_eq!(block.enter(|| COUNT.get()), 4);
        })
        .unwrap();
    assert_eq!(COUNT.get(), 7);
}

/// `Locals::reset` copies the prefix image over the header; the block must
/// stay in the thread's live set, and say so, or freeing it later would leave
/// its address in the set.
#[test]
fn a_reset_block_stays_listed_in_the_live_set() {
    use crate::storage::block::header;
    use crate::storage::clock::LIVE;
    let mut block = Locals::new();
    block.enter(|| NAMES.with_borrow_mut(|n| n.push(String::from("made"))));
    block.reset();
    let base = block.as_raw().0;
    // SAFETY: `block` owns the block, which is not freed.
    assert!(unsafe { header(base) }.listed.get());
    assert!(LIVE.with(|live| live.borrow().contains(&(base as usize))));
}
