use std::cell::Cell;

co_local::co_local! {
    static COUNT: Cell<u32> = const { Cell::new(0) };
}

fn show() {
    COUNT.with_borrow(|n| println!("{n}"));
}

fn main() {}
