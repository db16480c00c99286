co_local::co_local! {
    let NAME: String = String::new();
}

fn main() {}
