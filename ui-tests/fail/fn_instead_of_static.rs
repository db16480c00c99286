co_local::co_local! {
    fn name() -> String {
        String::new()
    }
}

fn main() {}
