co_local::co_local! {
    static COUNT: u32 = "zero";
}

fn main() {}
