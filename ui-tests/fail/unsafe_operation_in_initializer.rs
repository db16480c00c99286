// A lazy initialiser is the user's code: an unsafe operation in it needs the
// user's own `unsafe` block, which `forbid(unsafe_code)` then refuses.

#![forbid(unsafe_code)]

co_local::co_local! {
    static RAW: u64 = {
        let p = 0x10usize as *const u64;
        *p
    };
}

fn main() {}
