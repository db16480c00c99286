co_local::co_local! {
    static A: u32 = 1
    static B: u32 = 2;
}

fn main() {}
