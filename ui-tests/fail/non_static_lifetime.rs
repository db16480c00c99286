co_local::co_local! {
    static NAME: &'a str = "main";
}

fn main() {}
