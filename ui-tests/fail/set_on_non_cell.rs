co_local::co_local! {
    static COUNT: u32 = const { 0 };
}

fn reset() {
    COUNT.set(0);
}

fn main() {}
