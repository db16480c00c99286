// The type is the user's too: an unsafe call in an array length is refused
// wherever the expansion writes the type.

const unsafe fn three() -> usize {
    3
}

co_local::co_local! {
    static BYTES: [u8; three()] = const { [0; 3] };
}

fn main() {}
