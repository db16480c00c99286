use std::cell::Cell;

co_local::co_local! {
    static A: Cell<u32> = const { Cell::new(0) };
    oops
    static B: Cell<u32> = const { Cell::new(0) };
}

fn main() {}
