// `#[inherit]` takes nothing, or `with = path::to::function`.

use std::cell::Cell;

fn reset(_: &Cell<u32>) -> Cell<u32> {
    Cell::new(0)
}

co_local::co_local! {
    #[inherit(clone)]
    static A: Cell<u32> = const { Cell::new(0) };
    #[inherit(with = reset, deep)]
    static B: Cell<u32> = const { Cell::new(0) };
    #[inherit = reset]
    static C: Cell<u32> = const { Cell::new(0) };
}

fn main() {
    let _ = (&A, &B, &C);
}
