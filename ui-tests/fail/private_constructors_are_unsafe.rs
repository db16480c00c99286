// The hidden constructors behind `co_local!` are `unsafe`: a key paired
// with a declaration of another type, or with one that is not in the
// registry, would read outside its block.

use std::cell::Cell;

co_local::co_local! {
    static SMALL: u8 = const { 0 };
}

fn main() {
    let _big: co_local::LocalKey<Cell<[u64; 64]>> =
        co_local::LocalKey::private_new(
            SMALL.declaration(),
            || Cell::new([0; 64]),
            false,
            |c| Cell::new(c.get()),
            None,
        );
}
