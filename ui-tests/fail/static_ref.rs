co_local::co_local! {
    static ref NAME: String = String::from("main");
}

fn main() {}
