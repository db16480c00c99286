co_local::co_local! {
    static NAME: String = const { String::from("main") };
}

fn main() {}
