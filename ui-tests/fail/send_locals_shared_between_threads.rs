use co_local::SendLocals;

// A `SendLocals` moves to another thread, but one thread at a time uses it:
// sharing a reference across threads is refused.
fn share(locals: &'static SendLocals) {
    std::thread::spawn(move || drop(locals));
}

fn main() {}
