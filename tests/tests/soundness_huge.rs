//! Declarations whose sizes add up past the address space (SPEC.md,
//! "Soundness"): laying them out must not wrap around and put values over
//! the header or outside the block. Every use of co_local in this binary
//! panics with a clear message instead; each value alone is a valid type.

use co_local::{co_local, Locals};
use co_local_tests::{catch, message};

co_local! {
    // Never made: lazy values whose initialiser is never run. Seventeen
    // arrays of 2^60 bytes add up past 2^64.
    static HUGE_00: [u8; 1 << 60] = [0; 1 << 60];
    static HUGE_01: [u8; 1 << 60] = [1; 1 << 60];
    static HUGE_02: [u8; 1 << 60] = [2; 1 << 60];
    static HUGE_03: [u8; 1 << 60] = [3; 1 << 60];
    static HUGE_04: [u8; 1 << 60] = [4; 1 << 60];
    static HUGE_05: [u8; 1 << 60] = [5; 1 << 60];
    static HUGE_06: [u8; 1 << 60] = [6; 1 << 60];
    static HUGE_07: [u8; 1 << 60] = [7; 1 << 60];
    static HUGE_08: [u8; 1 << 60] = [8; 1 << 60];
    static HUGE_09: [u8; 1 << 60] = [9; 1 << 60];
    static HUGE_10: [u8; 1 << 60] = [10; 1 << 60];
    static HUGE_11: [u8; 1 << 60] = [11; 1 << 60];
    static HUGE_12: [u8; 1 << 60] = [12; 1 << 60];
    static HUGE_13: [u8; 1 << 60] = [13; 1 << 60];
    static HUGE_14: [u8; 1 << 60] = [14; 1 << 60];
    static HUGE_15: [u8; 1 << 60] = [15; 1 << 60];
    static HUGE_16: [u8; 1 << 60] = [16; 1 << 60];
    static SMALL: u8 = const { 7 };
}

fn assert_too_large(result: std::thread::Result<impl Sized>) {
    let payload = result
        .err()
        .expect("laid out a block past the address space");
    let message = message(&*payload);
    assert!(
        message.contains("do not fit in one block"),
        "unexpected panic: {message}"
    );
}

#[test]
fn declarations_past_the_address_space_panic_clearly_at_first_use() {
    assert_too_large(catch(co_local::block_size));
    assert_too_large(catch(Locals::new));
    assert_too_large(catch(|| SMALL.with(|v| *v)));
    // Every later use panics the same way: nothing was half laid out. (The
    // huge values themselves are not accessed: making one would need a
    // stack frame of their size.)
    assert_too_large(catch(|| SMALL.try_with(|v| *v)));
    assert_eq!(co_local::declarations().len(), 18);
}
