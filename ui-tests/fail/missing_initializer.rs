co_local::co_local! {
    static NAME: String;
}

fn main() {}
