// `#[inherit]` copies the value into each new coroutine with `Clone`.

struct Connection;

co_local::co_local! {
    #[inherit]
    static CONN: Option<Connection> = const { None };
}

fn main() {
    let _ = &CONN;
}
