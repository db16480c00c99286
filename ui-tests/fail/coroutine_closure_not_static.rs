use co_runtime::{Coroutine, Yielder};

fn greet() {
    let name = String::from("main");
    let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| println!("{name}"));
    co.resume(());
}

fn main() {}
