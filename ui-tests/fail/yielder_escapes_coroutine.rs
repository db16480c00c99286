use co_runtime::{Coroutine, Yielder};

fn leak() {
    let mut co = Coroutine::<(), (), _>::new(|y: &Yielder<(), ()>, ()| y);
    let _ = co.resume(());
}

fn main() {}
