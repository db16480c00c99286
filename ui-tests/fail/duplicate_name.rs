use std::cell::Cell;

co_local::co_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static DEPTH: Cell<u64> = const { Cell::new(0) };
}

fn main() {}
