co_local::co_local! {
    static COUNT: _ = 0u32;
}

fn main() {}
