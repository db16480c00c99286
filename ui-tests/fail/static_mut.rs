use std::cell::Cell;

co_local::co_local! {
    static mut COUNTER: Cell<u32> = const { Cell::new(0) };
}

fn main() {}
