// Attributes are the user's too: one that `forbid(unsafe_code)` refuses on a
// static is refused on a coroutine-local one.

#![forbid(unsafe_code)]

use std::cell::Cell;

co_local::co_local! {
    #[export_name = "co_local_exported_key"]
    static EXPORTED: Cell<u32> = const { Cell::new(0) };
}

fn main() {}
