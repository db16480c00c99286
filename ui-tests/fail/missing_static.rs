co_local::co_local! {
    NAME: String = String::from("main");
}

fn main() {}
