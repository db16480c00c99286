// `#[inherit(with = ..)]` takes the path of a function, not an expression:
// a closure here would be code of the user's that the expansion runs, and
// must not get past `forbid(unsafe_code)`.

#![forbid(unsafe_code)]

use std::cell::Cell;

co_local::co_local! {
    #[inherit(with = |_: &Cell<u64>| {
        let p = 0x10usize as *const u64;
        Cell::new(*p)
    })]
    static X: Cell<u64> = const { Cell::new(1) };
}

fn main() {}
