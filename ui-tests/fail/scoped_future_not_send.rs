use std::cell::Cell;
use std::rc::Rc;

co_local::co_local! {
    static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
}

fn is_send<T: Send>(_: T) {}

fn main() {
    // The wrapper is `Send` only when the future it wraps is.
    let held = Rc::new(1);
    is_send(REQUEST_ID.scope_future(5, async move { *held }));
}
