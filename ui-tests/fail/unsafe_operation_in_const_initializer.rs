// The same for a `const { }` initialiser.

const unsafe fn secret() -> u64 {
    7
}

co_local::co_local! {
    static SECRET: u64 = const { secret() };
}

fn main() {}
