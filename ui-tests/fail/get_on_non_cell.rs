co_local::co_local! {
    static COUNT: u32 = const { 0 };
}

fn count() -> u32 {
    COUNT.get()
}

fn main() {}
