use co_local::Locals;

fn hand_over(locals: Locals) {
    std::thread::spawn(move || drop(locals));
}

fn main() {}
