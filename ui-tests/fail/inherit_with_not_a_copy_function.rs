// `#[inherit(with = f)]` needs `f: fn(&T) -> T` for the value's type `T`.

use std::cell::Cell;

fn wrong_argument(_: u32) -> Cell<u32> {
    Cell::new(0)
}

const NOT_A_FUNCTION: u32 = 1;

co_local::co_local! {
    #[inherit(with = wrong_argument)]
    static A: Cell<u32> = const { Cell::new(0) };
    #[inherit(with = NOT_A_FUNCTION)]
    static B: Cell<u32> = const { Cell::new(0) };
}

fn main() {
    let _ = (&A, &B);
}
