//! `LocalKey::scope_future`: a value in place during each poll of a future
//! only, the future dropped with it in place, on tokio's multi-thread
//! runtime, a `LocalSet` and a plain executor; and the wrapper's drop where
//! the value cannot be put in place.

use std::cell::{Cell, RefCell};
use std::future::{pending, poll_fn, Future};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use co_local::{co_local, LocalWithLocals, Locals, Scoped, WithLocals};
use co_local_tests::poll_once;

co_local! {
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    static TRACE: RefCell<Vec<String>> = RefCell::new(Vec::new());
    static LAZY_ID: Cell<u64> = Cell::new(100);
}

/// Yields once, then reads the request id: the other branch runs between.
async fn read_after_a_yield() -> u64 {
    tokio::task::yield_now().await;
    REQUEST_ID.get()
}

#[test]
fn each_join_branch_sees_its_own_value_between_polls_on_the_multi_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let seen = runtime.block_on(async {
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                tokio::spawn(WithLocals::new(async move {
                    REQUEST_ID.set(1000 + i);
                    let (a, b, c) = tokio::join!(
                        REQUEST_ID.scope_future(i * 10 + 1, read_after_a_yield()),
                        REQUEST_ID.scope_future(i * 10 + 2, read_after_a_yield()),
                        read_after_a_yield(),
                    );
                    (i, a, b, c, REQUEST_ID.get())
                }))
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap());
        }
        seen
    });
    for (i, a, b, c, after) in seen {
        assert_eq!(
            (a, b, c, after),
            (i * 10 + 1, i * 10 + 2, 1000 + i, 1000 + i)
        );
    }
}

#[test]
fn each_join_branch_sees_its_own_value_in_a_local_set() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let seen = local.block_on(&runtime, async {
        tokio::task::spawn_local(LocalWithLocals::new(async {
            TRACE.with_borrow_mut(|t| t.push(String::from("task")));
            let traced = |name: &'static str| {
                TRACE.scope_future(Vec::new(), async move {
                    TRACE.with_borrow_mut(|t| t.push(name.to_owned()));
                    tokio::task::yield_now().await;
                    TRACE.with_borrow_mut(|t| t.push(format!("{name} again")));
                    TRACE.take()
                })
            };
            let (a, b) = tokio::join!(traced("a"), traced("b"));
            (a, b, TRACE.take())
        }))
        .await
        .unwrap()
    });
    assert_eq!(
        seen,
        (
            vec![String::from("a"), String::from("a again")],
            vec![String::from("b"), String::from("b again")],
            vec![String::from("task")],
        )
    );
}

#[test]
fn the_value_is_in_place_only_during_polls() {
    let mut block = Locals::new();
    block.enter(|| REQUEST_ID.set(1));
    let mut polls = 0;
    let scoped = REQUEST_ID.scope_future(
        5,
        poll_fn(|_| {
            polls += 1;
            assert_eq!(REQUEST_ID.get(), 5 + polls - 1);
            REQUEST_ID.set(REQUEST_ID.get() + 1); // kept in the wrapper
            if polls == 3 {
                Poll::Ready(REQUEST_ID.get())
            } else {
                Poll::Pending
            }
        }),
    );
    let mut scoped = pin!(scoped);
    for _ in 0..2 {
        assert_eq!(block.enter(|| poll_once(&mut scoped)), Poll::Pending);
        assert_eq!(block.enter(|| REQUEST_ID.get()), 1, "between polls");
    }
    assert_eq!(block.enter(|| poll_once(&mut scoped)), Poll::Ready(8));
    assert_eq!(block.enter(|| REQUEST_ID.get()), 1);
    // Outside the block, the thread's own value was never touched.
    assert_eq!(REQUEST_ID.get(), 0);
}

/// Records the request id when dropped.
struct SeesIdWhenDropped(Arc<Mutex<Vec<u64>>>);

impl Drop for SeesIdWhenDropped {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(REQUEST_ID.get());
    }
}

#[test]
fn a_future_dropped_midway_is_dropped_with_the_value_in_place() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let guard = SeesIdWhenDropped(seen.clone());
    let task = WithLocals::new(async move {
        REQUEST_ID.set(1);
        {
            let mut scoped = Box::pin(REQUEST_ID.scope_future(9, async move {
                let _guard = guard;
                pending::<()>().await;
            }));
            assert_eq!(poll_once(&mut scoped), Poll::Pending);
            assert_eq!(REQUEST_ID.get(), 1);
            // Dropped here, pending: its guard sees 9.
        }
        REQUEST_ID.get()
    });
    let mut task = pin!(task);
    assert_eq!(poll_once(&mut task), Poll::Ready(1));
    assert_eq!(*seen.lock().unwrap(), [9]);
}

#[test]
fn a_lazy_value_is_made_first() {
    let mut block = Locals::new();
    let mut scoped = pin!(LAZY_ID.scope_future(5, async { LAZY_ID.get() }));
    assert_eq!(block.enter(|| poll_once(&mut scoped)), Poll::Ready(5));
    assert_eq!(block.enter(|| LAZY_ID.get()), 100, "made, then put back");
}

/// An element that writes its name into a shared log when dropped.
struct Noted(&'static str, Log);

type Log = Arc<Mutex<Vec<String>>>;

impl Drop for Noted {
    fn drop(&mut self) {
        self.1.lock().unwrap().push(self.0.to_string());
    }
}

co_local! {
    static NOTED: RefCell<Vec<Noted>> = RefCell::new(Vec::new());
}

/// A future that never completes and, when dropped, logs what it finds in
/// `NOTED` then: the names of the value in place, or why there is none.
fn logs_noted_when_dropped(log: Log) -> impl Future<Output = ()> {
    struct Guard(Log);
    impl Drop for Guard {
        fn drop(&mut self) {
            let found = match NOTED.try_with(|n| {
                n.try_borrow()
                    .map(|n| n.iter().map(|e| e.0).collect::<Vec<_>>().join(","))
            }) {
                Ok(Ok(names)) => format!("future dropped with [{names}]"),
                Ok(Err(_)) => String::from("future dropped, value borrowed mutably"),
                Err(err) => format!("future dropped, value {:?}", err.kind()),
            };
            self.0.lock().unwrap().push(found);
        }
    }
    let guard = Guard(log);
    async move {
        let _guard = guard;
        pending::<()>().await;
    }
}

#[test]
fn a_borrowed_ref_cell_at_drop_leaves_the_future_to_be_dropped_as_it_is() {
    let log = Log::default();
    let mut block = Locals::new();
    let value = vec![Noted("scoped", log.clone())];
    let mut scoped = Box::pin(NOTED.scope_future(value, logs_noted_when_dropped(log.clone())));
    assert_eq!(block.enter(|| poll_once(&mut scoped)), Poll::Pending);
    block.enter(|| {
        NOTED.with_borrow_mut(|n| n.push(Noted("own", log.clone())));
        NOTED.with_borrow(|_| drop(scoped)); // no panic out of the drop
        assert_eq!(
            NOTED.with_borrow(|n| n.iter().map(|e| e.0).collect::<Vec<_>>()),
            ["own"],
            "the block's own value is untouched"
        );
    });
    // The future first, as it is (it sees the block's own value), then the
    // value that could not be put in place.
    assert_eq!(
        log.lock().unwrap().drain(..).collect::<Vec<_>>(),
        ["future dropped with [own]", "scoped"]
    );
    drop(block);
    assert_eq!(*log.lock().unwrap(), ["own"]);
}

#[test]
fn a_scoped_future_dropped_while_its_block_dies_does_not_panic() {
    /// Holds a scoped future, dropped by its block's destruction after the
    /// value it scopes is gone.
    struct Holder(Option<std::pin::Pin<Box<dyn Future<Output = ()>>>>);
    co_local! {
        static HOLDER: RefCell<Holder> = RefCell::new(Holder(None));
    }
    let log = Log::default();
    let mut block = Locals::new();
    block.enter(|| {
        let value = vec![Noted("scoped", log.clone())];
        let scoped = NOTED.scope_future(value, logs_noted_when_dropped(log.clone()));
        // `NOTED` is made after `HOLDER`: it dies first, then `HOLDER`
        // drops the future whose value cannot be put in place.
        HOLDER.with_borrow_mut(|h| h.0 = Some(Box::pin(scoped)));
        NOTED.with_borrow_mut(|n| n.push(Noted("own", log.clone())));
    });
    drop(block);
    assert_eq!(
        *log.lock().unwrap(),
        ["own", "future dropped, value Destroyed", "scoped"]
    );
}

#[test]
fn scoped_is_send_when_its_value_and_future_are() {
    fn is_send<T: Send>(_: &T) {}
    let scoped: Scoped<Cell<u64>, _> = REQUEST_ID.scope_future(1, async {});
    is_send(&scoped);
    let scoped = TRACE.scope_future(Vec::new(), std::future::ready(3));
    is_send(&scoped);
}

#[test]
fn scope_does_not_keep_a_returned_future_in_scope() {
    // The trap `scope_future` exists for: the override ends before the
    // returned future is polled.
    let mut block = Locals::new();
    block.enter(|| REQUEST_ID.set(1));
    let fut = block.enter(|| REQUEST_ID.scope(5, || async { REQUEST_ID.get() }));
    let mut fut = pin!(fut);
    assert_eq!(block.enter(|| poll_once(&mut fut)), Poll::Ready(1));
    let scoped = REQUEST_ID.scope_future(5, async { REQUEST_ID.get() });
    let mut scoped = pin!(scoped);
    assert_eq!(block.enter(|| poll_once(&mut scoped)), Poll::Ready(5));
}

/// Holds a guard; pending at its first poll, panics at its second. Not an
/// `async` block: a panic out of `poll` leaves its fields in place, to be
/// dropped with it (as a `join` of futures leaves its other branch).
struct PanicsOnSecondPoll {
    _guard: SeesIdWhenDropped,
    polled: bool,
}

impl Future for PanicsOnSecondPoll {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.polled, true) {
            panic!("the second poll panics");
        }
        Poll::Pending
    }
}

#[test]
fn a_poll_that_panics_keeps_the_value_for_the_drop_of_the_future() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut block = Locals::new();
    block.enter(|| REQUEST_ID.set(1));
    let scoped = REQUEST_ID.scope_future(
        5,
        PanicsOnSecondPoll {
            _guard: SeesIdWhenDropped(seen.clone()),
            polled: false,
        },
    );
    let mut scoped = Box::pin(scoped);
    assert!(block.enter(|| poll_once(&mut scoped)).is_pending());
    let panicked = co_local_tests::catch(|| block.enter(|| poll_once(&mut scoped)));
    assert!(panicked.is_err());
    assert_eq!(
        block.enter(|| REQUEST_ID.get()),
        1,
        "put back after the panic"
    );
    assert!(seen.lock().unwrap().is_empty());
    block.enter(|| drop(scoped));
    assert_eq!(
        *seen.lock().unwrap(),
        [5],
        "dropped with the value in place"
    );
}
