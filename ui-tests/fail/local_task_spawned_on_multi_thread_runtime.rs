// A `LocalWithLocals` reaches values of any type, so it stays on its thread:
// the multi-thread runtime refuses it, and says so naming the wrapper.

use co_local::LocalWithLocals;

fn spawn(rt: &tokio::runtime::Runtime) {
    rt.spawn(LocalWithLocals::new(async {}));
}

fn main() {}
