//! Spawning tokio tasks and blocking jobs whose coroutine-local values
//! follow the work (Cargo feature `tokio`).
//!
//! Each function wraps the work in a block of its own, made where it is
//! spawned, and hands it to tokio: [`spawn`] a [`WithLocals`] task,
//! [`spawn_local`] a [`LocalWithLocals`] task (inside a `LocalSet`), and
//! [`spawn_blocking`] a job run inside a [`SendLocals`]. Each starts with a
//! copy of the `#[inherit]` values alive where it is spawned, as its block
//! type does: [`spawn_local`] every one, the others those whose type is
//! `Send`. Each returns tokio's `JoinHandle`.
//!
//! With `co_local::deny_thread_values` as the runtime's `on_thread_start`,
//! a task spawned with `tokio::spawn` directly (without a block of its own)
//! panics at its first access instead of sharing its worker's values; so
//! does a job given to `tokio::task::spawn_blocking` directly, since the
//! blocking threads run `on_thread_start` too. (A current-thread runtime
//! runs its tasks on the thread that calls `block_on`: it has no workers to
//! deny.)
//!
//! # Examples
//!
//! ```
//! use std::cell::Cell;
//! use co_local::co_local;
//!
//! co_local! {
//!     #[inherit]
//!     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let handled = co_local::tokio::spawn(async {
//!     REQUEST_ID.set(17); // the request's own value
//!     let child = co_local::tokio::spawn(async { REQUEST_ID.get() });
//!     let blocking = co_local::tokio::spawn_blocking(|| REQUEST_ID.get());
//!     (child.await.unwrap(), blocking.await.unwrap())
//! });
//! assert_eq!(handled.await.unwrap(), (17, 17));
//! assert_eq!(REQUEST_ID.get(), 0);
//! # }
//! ```

use core::future::Future;

use ::tokio::task::JoinHandle;

use crate::{LocalWithLocals, SendLocals, WithLocals};

/// Spawns `future` on the current tokio runtime as a [`WithLocals`] task:
/// it starts with a copy of the `#[inherit]` values of `Send` types alive in
/// the block current here, and may move between the runtime's workers.
///
/// # Panics
///
/// Where `tokio::spawn` panics: outside a tokio runtime.
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    ::tokio::spawn(WithLocals::new(future))
}

/// Spawns `future` on the current `LocalSet` as a [`LocalWithLocals`] task:
/// it starts with a copy of every `#[inherit]` value alive in the block
/// current here, and stays on this thread.
///
/// # Panics
///
/// Where `tokio::task::spawn_local` panics: outside a `LocalSet`.
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    ::tokio::task::spawn_local(LocalWithLocals::new(future))
}

/// Runs `f` on tokio's blocking pool inside a [`SendLocals`] made here: it
/// starts with a copy of the `#[inherit]` values of `Send` types alive in
/// the block current here.
///
/// # Panics
///
/// Where `tokio::task::spawn_blocking` panics: outside a tokio runtime.
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let mut locals = SendLocals::inherit();
    ::tokio::task::spawn_blocking(move || locals.enter(f))
}
