//! Coroutine stacks: their sizes, the guard page, the per-thread pool, and
//! coroutines on several threads at once.

use std::cell::Cell;
use std::hint::black_box;

use co_local::co_local;
use co_runtime::{stack_stats, Coroutine, CoroutineResult, Yielder, STACK_POOL_CAPACITY};

co_local! {
    static ID: Cell<u64> = const { Cell::new(0) };
}

/// Recurses `n` times with a frame of at least 1 KiB, suspending at the
/// bottom if given a yielder; returns the sum of `1..=n`.
fn deep(y: Option<&Yielder<(), u64>>, n: u64) -> u64 {
    let mut frame = [n; 128];
    black_box(&mut frame);
    if n == 0 {
        if let Some(y) = y {
            y.suspend(ID.get());
        }
        return 0;
    }
    let below = deep(y, black_box(n - 1));
    // The frame is used after the call: no tail call, one frame per level.
    black_box(&frame)[n as usize % 128] + below
}

#[test]
fn deep_recursion_with_a_large_stack() {
    const N: u64 = 20_000; // 20 MB of frames at least
    let mut co = Coroutine::with_stack_size(64 << 20, |y: &Yielder<(), u64>, ()| {
        ID.set(77);
        deep(Some(y), N)
    });
    // Suspended at the bottom of the recursion...
    assert_eq!(co.resume(()), CoroutineResult::Yield(77));
    // ...while something else runs on a default stack.
    let mut small = Coroutine::new(|_: &Yielder<(), u64>, ()| deep(None, 100));
    assert_eq!(small.resume(()), CoroutineResult::Return(5050));
    assert_eq!(co.resume(()), CoroutineResult::Return(N * (N + 1) / 2));
}

#[test]
fn the_whole_stack_size_is_usable() {
    let page = 64 * 1024;
    let mut co = Coroutine::with_stack_size(1 << 20, |_: &Yielder<(), ()>, ()| {
        // Use most of the megabyte; the guard page is below it.
        let mut big = [1_u8; 900 * 1024];
        black_box(&mut big);
        big.iter().map(|&b| u64::from(b)).sum::<u64>()
    });
    assert_eq!(co.resume(()), CoroutineResult::Return(900 * 1024));
    // A stack larger than asked (rounded to pages) is fine too.
    let mut odd = Coroutine::with_stack_size(page + 1, |_: &Yielder<(), ()>, ()| {
        let mut array = [2_u8; 32 * 1024];
        black_box(&mut array);
        array[7]
    });
    assert_eq!(odd.resume(()), CoroutineResult::Return(2));
}

#[test]
#[should_panic = "cannot map a coroutine stack"]
fn an_impossible_stack_size_panics() {
    // Beyond any address space.
    let _ = Coroutine::with_stack_size(usize::MAX / 2, |_: &Yielder<(), ()>, ()| ());
}

/// Overflows a coroutine's stack in a child process, which must hit the
/// guard page (never run on over other memory), report "coroutine stack
/// overflow" with the stack's bounds and size, and abort.
#[cfg(unix)]
#[test]
fn stack_overflow_hits_the_guard_page_and_is_reported() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const CHILD: &str = "CO_RUNTIME_OVERFLOW_CHILD";
    const NAME: &str = "stack_overflow_hits_the_guard_page_and_is_reported";
    match std::env::var(CHILD).as_deref() {
        Ok("coroutine") => {
            let mut co = Coroutine::with_stack_size(64 * 1024, |_: &Yielder<(), u64>, ()| {
                deep(None, u64::MAX)
            });
            co.resume(());
            // Not reached: print something the parent would see.
            println!("the stack overflow went unnoticed");
            std::process::exit(0);
        }
        Ok("thread") => {
            // A thread's own overflow is still std's to report, after a
            // coroutine has installed co_runtime's handler.
            let mut co = Coroutine::new(|_: &Yielder<(), u64>, ()| 1);
            co.resume(());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(|| deep(None, u64::MAX))
                .unwrap()
                .join()
                .unwrap();
            println!("the stack overflow went unnoticed");
            std::process::exit(0);
        }
        _ => {}
    }
    let run = |which: &str| {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, which)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!stdout.contains("went unnoticed"), "{stdout}");
        (output.status, stderr)
    };

    let (status, stderr) = run("coroutine");
    const SIGABRT: i32 = 6;
    assert_eq!(status.signal(), Some(SIGABRT), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("co_runtime: coroutine stack overflow: fault at 0x")
            && stderr.contains("of a 65536-byte coroutine stack 0x"),
        "{stderr}"
    );

    let (status, stderr) = run("thread");
    assert!(status.signal().is_some(), "{status:?}\n{stderr}");
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    assert!(!stderr.contains("coroutine stack overflow"), "{stderr}");
}

#[test]
fn many_coroutines_on_several_threads_at_once() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 200;
    const ROUNDS: u64 = 5;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                ID.set(1_000_000 + t);
                let mut all: Vec<_> = (0..PER_THREAD)
                    .map(|i| {
                        let id = t * 1000 + i;
                        Coroutine::new(move |y: &Yielder<(), u64>, ()| {
                            ID.set(id);
                            for _ in 0..ROUNDS {
                                y.suspend(ID.get());
                                assert_eq!(ID.get(), id);
                                std::thread::yield_now();
                            }
                            id
                        })
                    })
                    .collect();
                barrier.wait();
                for _ in 0..ROUNDS {
                    for (i, co) in (0..).zip(&mut all) {
                        assert_eq!(co.resume(()), CoroutineResult::Yield(t * 1000 + i));
                        assert_eq!(ID.get(), 1_000_000 + t);
                    }
                }
                let mut sum = 0;
                for co in &mut all {
                    sum += co.resume(()).as_return().unwrap();
                }
                assert_eq!(ID.get(), 1_000_000 + t);
                sum
            })
        })
        .collect();
    for (t, thread) in (0..).zip(threads) {
        let expected: u64 = (0..PER_THREAD).map(|i| t * 1000 + i).sum();
        assert_eq!(thread.join().unwrap(), expected);
    }
}

#[test]
fn stacks_are_reused_in_steady_state() {
    std::thread::spawn(|| {
        let run = || {
            let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| y.suspend(()));
            co.resume(());
            co.resume(());
        };
        run();
        let before = stack_stats();
        assert_eq!((before.thread_maps, before.pooled), (1, 1));
        for _ in 0..1000 {
            run();
        }
        // Dropped suspended or before the start: the stack comes back too.
        for _ in 0..100 {
            let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| y.suspend(()));
            co.resume(());
            drop(co);
            drop(Coroutine::new(|_: &Yielder<(), ()>, ()| ()));
        }
        let after = stack_stats();
        assert_eq!(after.thread_maps, before.thread_maps);
        assert_eq!(after.thread_unmaps, before.thread_unmaps);
        assert_eq!(after.pooled, before.pooled);
    })
    .join()
    .unwrap();
}

#[test]
fn the_pool_keeps_a_bounded_number_of_stacks() {
    std::thread::spawn(|| {
        let many: Vec<_> = (0..100)
            .map(|_| {
                let mut co = Coroutine::new(|y: &Yielder<(), ()>, ()| y.suspend(()));
                co.resume(());
                co
            })
            .collect();
        let stats = stack_stats();
        assert_eq!((stats.thread_maps, stats.pooled), (100, 0));
        drop(many);
        let stats = stack_stats();
        assert_eq!(stats.pooled, STACK_POOL_CAPACITY);
        assert_eq!(stats.thread_unmaps, 100 - STACK_POOL_CAPACITY as u64);
        // A finished coroutine gives its stack back at once, not when dropped.
        let mut done = Coroutine::new(|_: &Yielder<(), ()>, ()| ());
        assert_eq!(stack_stats().pooled, STACK_POOL_CAPACITY - 1);
        done.resume(());
        assert_eq!(stack_stats().pooled, STACK_POOL_CAPACITY);
    })
    .join()
    .unwrap();
}

#[test]
fn an_impossible_stack_size_panics_at_the_caller() {
    use std::sync::{Arc, Mutex};
    // Record where the panic of this test's thread is reported; other threads'
    // panics go to the previous hook.
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let previous = Arc::new(std::panic::take_hook());
    {
        let (seen, previous) = (seen.clone(), previous.clone());
        let me = std::thread::current().id();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == me {
                *seen.lock().unwrap() = info.location().map(|l| l.file().to_string());
            } else {
                previous(info);
            }
        }));
    }
    let err = co_local_tests::catch(|| {
        Coroutine::with_stack_size(usize::MAX, |_: &Yielder<(), ()>, ()| {});
    })
    .unwrap_err();
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    assert!(co_local_tests::message(&*err).contains("too large"));
    let file = seen.lock().unwrap().clone().unwrap();
    assert!(file.ends_with("runtime_stacks.rs"), "reported at {file}");
}
