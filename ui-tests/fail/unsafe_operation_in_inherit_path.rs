// The path given to `#[inherit(with = ..)]` is the user's: an unsafe call in
// one of its generic arguments is refused.

use std::cell::Cell;

const unsafe fn three() -> usize {
    3
}

fn copy<const N: usize>(value: &Cell<u64>) -> Cell<u64> {
    Cell::new(value.get() + N as u64)
}

co_local::co_local! {
    #[inherit(with = copy::<{ three() }>)]
    static X: Cell<u64> = const { Cell::new(1) };
}

fn main() {}
