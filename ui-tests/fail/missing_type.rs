co_local::co_local! {
    static NAME = String::new();
}

fn main() {}
