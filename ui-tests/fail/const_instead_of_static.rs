co_local::co_local! {
    const LIMIT: u32 = 10;
}

fn main() {}
