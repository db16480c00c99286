co_local::co_local! {
    static ITEMS: Vec<u32> where u32: Copy = Vec::new();
}

fn main() {}
