use co_runtime::Coroutine;

fn hand_over(co: Coroutine<(), (), ()>) {
    std::thread::spawn(move || drop(co));
}

fn main() {}
