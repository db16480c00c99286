co_local::co_local! {
    static NAME: str = *"main";
}

fn main() {}
