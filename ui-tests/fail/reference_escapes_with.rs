co_local::co_local! {
    static NAME: String = String::from("main");
}

fn name() -> usize {
    let r = NAME.with(|v| v);
    r.len()
}

fn main() {}
