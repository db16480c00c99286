//! `WithLocals` and `LocalWithLocals` under real executors: tokio's
//! multi-thread runtime (tasks move between workers), its `LocalSet`, and
//! futures' `LocalPool`; plus a task moved by hand from one thread to
//! another between two polls.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::{self, ThreadId};

use co_local::{co_local, AccessError, LocalWithLocals, Locals, WithLocals};
use co_local_tests::{catch, message, poll_once};

co_local! {
    /// The id each task is seeded with.
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    /// What the task did, made on first use in each block.
    static TRAIL: RefCell<Vec<u64>> = RefCell::new(Vec::new());
    /// Reports, when dropped, the `REQUEST_ID` of the block it dies in.
    static REPORTER: RefCell<Option<Reporter>> = const { RefCell::new(None) };
    /// Not `Send`: out of reach of a `Send` task.
    static SHARED: RefCell<Option<Rc<String>>> = const { RefCell::new(None) };
}

/// Where `Reporter`s write what they saw when they were dropped.
type Reports = Arc<Mutex<Vec<(u64, bool)>>>;

struct Reporter(Reports);

impl Drop for Reporter {
    fn drop(&mut self) {
        // The other values of the dying block are still there; its own is
        // not.
        let id = REQUEST_ID.try_with(Cell::get).unwrap_or(u64::MAX);
        let own_gone = REPORTER.try_with(|_| ()).is_err();
        self.0.lock().unwrap().push((id, own_gone));
    }
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn declarations_know_whether_their_type_is_send() {
    assert!(REQUEST_ID.declaration().is_send());
    assert!(TRAIL.declaration().is_send());
    assert!(REPORTER.declaration().is_send());
    assert!(!SHARED.declaration().is_send());
}

#[test]
fn hundreds_of_tasks_keep_their_values_across_yields_and_workers() {
    const TASKS: u64 = 200;
    const ROUNDS: u64 = 6;
    let rt = runtime(4);
    let threads_seen = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let moved = Arc::new(Mutex::new(0u32));
    let handles: Vec<_> = (1..=TASKS)
        .map(|id| {
            let threads_seen = threads_seen.clone();
            let moved = moved.clone();
            let mut task = WithLocals::new(async move {
                let mut last = thread::current().id();
                for round in 0..ROUNDS {
                    assert_eq!(REQUEST_ID.get(), id, "round {round}");
                    TRAIL.with_borrow_mut(|t| t.push(round));
                    tokio::task::yield_now().await;
                    let now = thread::current().id();
                    threads_seen.lock().unwrap().insert(now);
                    if now != last {
                        *moved.lock().unwrap() += 1;
                        last = now;
                    }
                }
                (REQUEST_ID.get(), TRAIL.take())
            });
            // Seeded before spawning.
            task.with_locals(|| REQUEST_ID.set(id)).unwrap();
            rt.spawn(task)
        })
        .collect();
    rt.block_on(async {
        for (id, handle) in (1..=TASKS).zip(handles) {
            let (seen, trail) = handle.await.unwrap();
            assert_eq!(seen, id);
            assert_eq!(trail, (0..ROUNDS).collect::<Vec<_>>());
        }
    });
    // Nothing leaked into the threads' own copies.
    assert_eq!(REQUEST_ID.get(), 0);
    println!(
        "{} worker threads ran the tasks; tasks changed thread {} times",
        threads_seen.lock().unwrap().len(),
        moved.lock().unwrap()
    );
}

/// Pending once, then ready.
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
fn a_task_moved_to_another_thread_between_polls_keeps_its_values() {
    let reports = Reports::default();
    let first_thread = thread::current().id();
    let reports_in_task = reports.clone();
    let mut task = WithLocals::new(Box::pin(async move {
        REPORTER.set(Some(Reporter(reports_in_task)));
        TRAIL.with_borrow_mut(|t| t.push(1));
        YieldOnce(false).await;
        assert_ne!(thread::current().id(), first_thread);
        TRAIL.with_borrow_mut(|t| t.push(2));
        (REQUEST_ID.get(), TRAIL.take())
    }));
    task.with_locals(|| REQUEST_ID.set(77)).unwrap();
    assert!(poll_once(&mut task).is_pending());
    TRAIL.with_borrow_mut(|t| t.push(100)); // this thread's own
    let result = thread::spawn(move || {
        let result = poll_once(&mut task);
        // The values died on this thread, with the task's block current.
        assert_eq!(task.with_locals(|| ()), None);
        assert!(TRAIL.with_borrow(Vec::is_empty));
        result
    })
    .join()
    .unwrap();
    assert_eq!(result, Poll::Ready((77, vec![1, 2])));
    assert_eq!(*reports.lock().unwrap(), [(77, true)]);
    assert_eq!(TRAIL.take(), [100]);
}

#[test]
fn an_aborted_pending_task_destroys_its_values_with_its_block_current() {
    let rt = runtime(4);
    let reports = Reports::default();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (1..=20)
        .map(|id| {
            let reports = reports.clone();
            let started = started_tx.clone();
            let mut task = WithLocals::new(async move {
                REPORTER.set(Some(Reporter(reports)));
                started.send(()).unwrap();
                std::future::pending::<()>().await;
            });
            task.with_locals(|| REQUEST_ID.set(id)).unwrap();
            rt.spawn(task)
        })
        .collect();
    for _ in 0..20 {
        started_rx.recv().unwrap();
    }
    assert!(reports.lock().unwrap().is_empty());
    for handle in &handles {
        handle.abort();
    }
    rt.block_on(async {
        for handle in handles {
            assert!(handle.await.unwrap_err().is_cancelled());
        }
    });
    let mut seen = reports.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).map(|id| (id, true)).collect::<Vec<_>>());
}

#[test]
fn the_loser_of_a_select_destroys_its_values() {
    let reports = Reports::default();
    let rt = runtime(2);
    let in_task = reports.clone();
    rt.block_on(async move {
        let mut slow = WithLocals::new(async move {
            REPORTER.set(Some(Reporter(in_task)));
            std::future::pending::<()>().await;
        });
        slow.with_locals(|| REQUEST_ID.set(5)).unwrap();
        tokio::select! {
            () = slow => unreachable!(),
            () = tokio::task::yield_now() => {}
        }
    });
    assert_eq!(*reports.lock().unwrap(), [(5, true)]);
}

#[test]
fn a_value_that_is_not_send_is_out_of_reach_of_a_send_task() {
    let rt = runtime(2);
    let msg = rt.block_on(async { rt_spawn_check().await.unwrap() });
    assert!(msg.contains("::SHARED`"), "{msg}");
    assert!(msg.contains("not `Send`"), "{msg}");
    // Outside the task, on the thread's own block, it is reachable.
    SHARED.set(Some(Rc::new(String::from("here"))));
    assert_eq!(
        SHARED.with_borrow(|s| s.as_deref().cloned()),
        Some("here".into())
    );
}

async fn rt_spawn_check() -> Result<String, tokio::task::JoinError> {
    tokio::spawn(WithLocals::new(async {
        assert_eq!(SHARED.try_with(|_| ()), Err(SHARED_ERR.with(|e| *e)));
        assert!(SHARED
            .try_with(|_| ())
            .unwrap_err()
            .to_string()
            .contains("not `Send`"));
        let panic = catch(|| SHARED.with_borrow(|_| ())).unwrap_err();
        // Its `Send` neighbours are reachable.
        REQUEST_ID.set(3);
        assert_eq!(REQUEST_ID.get(), 3);
        message(&*panic)
    }))
    .await
}

std::thread_local! {
    /// The error a `Send` task gets for `SHARED`, taken from a `Send` block
    /// made by hand.
    static SHARED_ERR: AccessError = {
        let mut task = WithLocals::new(async {});
        task.with_locals(|| SHARED.try_with(|_| ()).unwrap_err()).unwrap()
    };
}

#[test]
fn the_thread_bound_variant_reaches_every_value_on_a_local_set() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let results = local.block_on(&rt, async {
        let handles: Vec<_> = (1..=10u64)
            .map(|id| {
                let mut task = LocalWithLocals::new(async move {
                    for _ in 0..3 {
                        let text = SHARED.with_borrow(|s| s.as_deref().cloned());
                        assert_eq!(text.as_deref(), Some(&*format!("task {id}")));
                        tokio::task::yield_now().await;
                    }
                    SHARED.take().map(|s| Rc::strong_count(&s))
                });
                task.with_locals(|| SHARED.set(Some(Rc::new(format!("task {id}")))))
                    .unwrap();
                tokio::task::spawn_local(task)
            })
            .collect();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.unwrap());
        }
        results
    });
    assert_eq!(results, vec![Some(1); 10]);
    assert!(SHARED.with_borrow(Option::is_none));
}

#[test]
fn the_thread_bound_variant_on_a_local_pool() {
    let mut pool = futures::executor::LocalPool::new();
    let results = Rc::new(RefCell::new(Vec::new()));
    for id in 0..5u64 {
        let results = results.clone();
        let mut task = LocalWithLocals::new(async move {
            YieldOnce(false).await;
            results
                .borrow_mut()
                .push((id, REQUEST_ID.get(), SHARED.take()));
        });
        task.with_locals(|| {
            REQUEST_ID.set(id * 10);
            SHARED.set(Some(Rc::new(id.to_string())));
        })
        .unwrap();
        futures::task::LocalSpawnExt::spawn_local(&pool.spawner(), task).unwrap();
    }
    pool.run();
    let mut results = results.take();
    results.sort_unstable_by_key(|r| r.0);
    for (id, seen, shared) in results {
        assert_eq!(seen, id * 10);
        assert_eq!(
            shared.as_deref().map(String::as_str),
            Some(&*id.to_string())
        );
    }
}

#[test]
fn code_outside_every_wrapper_reaches_the_worker_threads_own_block() {
    let rt = runtime(1);
    let (plain_thread, plain, wrapped) = rt.block_on(async {
        tokio::spawn(async {
            // No wrapper: the worker thread's own copy, as with
            // `thread_local!`.
            REQUEST_ID.set(11);
            let wrapped = tokio::spawn(WithLocals::new(async {
                let before = REQUEST_ID.get();
                REQUEST_ID.set(22);
                before
            }))
            .await
            .unwrap();
            tokio::task::yield_now().await;
            (thread::current().id(), REQUEST_ID.get(), wrapped)
        })
        .await
        .unwrap()
    });
    assert_ne!(plain_thread, thread::current().id());
    assert_eq!(plain, 11); // another task on the same worker saw the same copy
    assert_eq!(wrapped, 0); // the wrapped task started from the constant
    assert_eq!(REQUEST_ID.get(), 0); // this thread's own copy is untouched
}

#[test]
fn tasks_inside_tasks_and_blocks_inside_tasks() {
    let rt = runtime(4);
    let outer = rt.block_on(async {
        let mut outer = WithLocals::new(async {
            REQUEST_ID.set(1);
            let mut a = WithLocals::new(async {
                tokio::task::yield_now().await;
                REQUEST_ID.get()
            });
            a.with_locals(|| REQUEST_ID.set(2)).unwrap();
            let b = WithLocals::new(async {
                REQUEST_ID.set(3);
                tokio::task::yield_now().await;
                REQUEST_ID.get()
            });
            // Both inner tasks complete (and destroy their blocks) inside a
            // poll of the outer one.
            let (a, b) = tokio::join!(a, b);
            assert_eq!((a, b), (2, 3));
            assert_eq!(REQUEST_ID.get(), 1);
            // A block made and dropped inside a poll.
            {
                let mut block = Locals::new();
                block.enter(|| REQUEST_ID.set(4));
            }
            assert_eq!(REQUEST_ID.get(), 1);
            tokio::task::yield_now().await;
            REQUEST_ID.get()
        });
        outer.with_locals(|| REQUEST_ID.set(100)).unwrap();
        tokio::spawn(outer).await.unwrap()
    });
    assert_eq!(outer, 1);
}

co_local! {
    /// Follows the work into new tasks.
    #[inherit]
    static TRACE_ID: Cell<u64> = const { Cell::new(0) };
    /// Inherited, but not `Send`: a `Send` task does not copy it.
    #[inherit]
    static LOCAL_TAG: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
}

#[test]
fn tasks_start_with_the_inherited_values_alive_where_they_are_made() {
    TRACE_ID.set(77);
    LOCAL_TAG.set(Some(Rc::from("on this thread")));
    let mut task = WithLocals::new(async { TRACE_ID.get() });
    assert_eq!(task.with_locals(|| TRACE_ID.get()), Some(77));
    // Not copied, and out of reach anyway.
    assert!(task
        .with_locals(|| LOCAL_TAG.try_with(|_| ()).is_err())
        .unwrap());
    let rt = runtime(2);
    assert_eq!(rt.block_on(async { tokio::spawn(task).await }).unwrap(), 77);
    let local = LocalWithLocals::new(async {
        (
            TRACE_ID.get(),
            LOCAL_TAG.with_borrow(|t| t.as_deref().map(str::to_owned)),
        )
    });
    assert_eq!(
        futures::executor::block_on(local),
        (77, Some(String::from("on this thread")))
    );
    TRACE_ID.set(0);
}
