co_local::co_local! {
    static ITEMS<T>: Vec<T> = Vec::new();
}

fn main() {}
