//! One op per function, for reading the machine code of the access path and
//! of co_runtime's switch (see BENCHMARKS.md, "Machine code"):
//!
//! ```text
//! cargo rustc --profile bench -p co_local_benches --example asm_probe -- --emit asm
//! objdump -d -M intel -C target/release/examples/asm_probe | less
//! ```

use std::cell::Cell;
use std::hint::black_box;

use co_runtime::{Coroutine, CoroutineResult};

co_local::co_local! {
    static CO_CONST: Cell<u64> = const { Cell::new(0) };
    static CO_LAZY: Cell<u64> = Cell::new(0);
}

std::thread_local! {
    static STD_CONST: Cell<u64> = const { Cell::new(0) };
    #[allow(clippy::missing_const_for_thread_local)]
    static STD_LAZY: Cell<u64> = Cell::new(0);
}

/// The access op on a `const {}` co_local value.
#[inline(never)]
pub fn co_const_op() {
    CO_CONST.set(CO_CONST.get() + 1);
}

/// The access op on a lazy co_local value.
#[inline(never)]
pub fn co_lazy_op() {
    CO_LAZY.set(CO_LAZY.get() + 1);
}

/// The access op on a `const {}` std thread-local.
#[inline(never)]
pub fn std_const_op() {
    STD_CONST.set(STD_CONST.get() + 1);
}

/// The access op on a lazy std thread-local.
#[inline(never)]
pub fn std_lazy_op() {
    STD_LAZY.set(STD_LAZY.get() + 1);
}

/// co_runtime's resume of a coroutine that suspends at once.
#[inline(never)]
pub fn co_runtime_resume(co: &mut Coroutine<(), (), ()>) -> CoroutineResult<(), ()> {
    co.resume(())
}

fn main() {
    let ops: [fn(); 4] = [co_const_op, co_lazy_op, std_const_op, std_lazy_op];
    for op in ops {
        black_box(op)();
    }
    let mut co = Coroutine::<(), (), ()>::new(|y, ()| loop {
        y.suspend(());
    });
    black_box(co_runtime_resume)(&mut co);
    println!("{} {}", CO_CONST.get(), STD_LAZY.get());
}
