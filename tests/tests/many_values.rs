//! A binary with hundreds of values that have a state byte. Destroying a
//! block destroys exactly the values it made, newest first, a recycled block
//! starts clean, a reset block makes its values again, and a block stays
//! within the SPEC's bound: its values, their padding, a state byte and a
//! 4-byte link per value with a state byte, and at most 64 bytes more.

use std::cell::{Cell, RefCell};

use co_local::{declarations, Locals};

std::thread_local! {
    /// The ids of the values dropped on this thread, in order.
    static DROPPED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// A value that says when it is dropped.
struct Tracked(Cell<u32>);

impl Drop for Tracked {
    fn drop(&mut self) {
        let id = self.0.get();
        let _ = DROPPED.try_with(|d| d.borrow_mut().push(id));
    }
}

fn dropped() -> Vec<u32> {
    DROPPED.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Ten lazy values in each of the modules named: `$m::V0` … `$m::V9`.
macro_rules! modules {
    ($($m:ident = $base:literal),* $(,)?) => {$(
        mod $m {
            use super::Tracked;
            use std::cell::Cell;
            co_local::co_local! {
                pub static V0: Tracked = Tracked(Cell::new($base));
                pub static V1: Tracked = Tracked(Cell::new($base + 1));
                pub static V2: Tracked = Tracked(Cell::new($base + 2));
                pub static V3: Tracked = Tracked(Cell::new($base + 3));
                pub static V4: Tracked = Tracked(Cell::new($base + 4));
                pub static V5: Tracked = Tracked(Cell::new($base + 5));
                pub static V6: Tracked = Tracked(Cell::new($base + 6));
                pub static V7: Tracked = Tracked(Cell::new($base + 7));
                pub static V8: Tracked = Tracked(Cell::new($base + 8));
                pub static V9: Tracked = Tracked(Cell::new($base + 9));
            }
        }
    )*};
}

modules!(
    m00 = 0,
    m01 = 10,
    m02 = 20,
    m03 = 30,
    m04 = 40,
    m05 = 50,
    m06 = 60,
    m07 = 70,
    m08 = 80,
    m09 = 90,
    m10 = 100,
    m11 = 110,
    m12 = 120,
    m13 = 130,
    m14 = 140,
    m15 = 150,
    m16 = 160,
    m17 = 170,
    m18 = 180,
    m19 = 190,
    m20 = 200,
    m21 = 210,
    m22 = 220,
    m23 = 230,
    m24 = 240,
    m25 = 250,
    m26 = 260,
    m27 = 270,
    m28 = 280,
    m29 = 290,
    m30 = 300,
    m31 = 310,
    m32 = 320,
    m33 = 330,
    m34 = 340,
    m35 = 350,
    m36 = 360,
    m37 = 370,
    m38 = 380,
    m39 = 390,
    m40 = 400,
    m41 = 410,
    m42 = 420,
    m43 = 430,
    m44 = 440,
    m45 = 450,
    m46 = 460,
    m47 = 470,
    m48 = 480,
    m49 = 490,
);

/// Values spread over the registry, reached in an order that is neither
/// the order of their declarations nor its reverse, so that only the order
/// of making explains the order of destruction.
fn touch_some() {
    m49::V5.with(|v| v.0.set(49_000 + v.0.get()));
    m00::V0.with(|v| assert_eq!(v.0.get(), 0));
    m24::V9.with(|v| assert_eq!(v.0.get(), 249));
    m07::V3.with(|v| v.0.set(7_000 + v.0.get()));
}

/// The declarations of this binary whose values have a state byte: lazy
/// ones, and constants with drop glue.
fn with_a_state_byte() -> usize {
    declarations()
        .iter()
        .filter(|d| !d.is_const() || d.needs_drop())
        .count()
}

#[test]
fn this_binary_has_hundreds_of_values_with_a_state_byte() {
    let stateful = with_a_state_byte();
    assert!(stateful > 400, "{stateful} values with a state byte");
}

#[test]
fn a_block_destroys_exactly_what_it_made_newest_first() {
    dropped();
    let mut block = Locals::new();
    block.enter(touch_some);
    drop(block);
    // Made in the order `touch_some` reached them: V5, V0, V9, V3.
    assert_eq!(dropped(), [73 + 7_000, 249, 0, 495 + 49_000]);
}

#[test]
fn a_recycled_block_starts_clean() {
    for round in 0..3 {
        dropped();
        let mut block = Locals::new();
        block.enter(|| {
            // Made in no block before this one on this thread.
            m07::V3.with(|v| assert_eq!(v.0.get(), 73, "round {round}"));
            m07::V4.with(|v| assert_eq!(v.0.get(), 74, "round {round}"));
            m49::V5.with(|v| assert_eq!(v.0.get(), 495, "round {round}"));
            m07::V3.with(|v| v.0.set(1));
        });
        drop(block);
        let mut seen = dropped();
        seen.sort_unstable();
        assert_eq!(seen, [1, 74, 495]);
    }
}

#[test]
fn a_reset_block_makes_its_values_again() {
    dropped();
    let mut block = Locals::new();
    block.enter(touch_some);
    block.reset();
    assert_eq!(dropped(), [73 + 7_000, 249, 0, 495 + 49_000]);
    block.enter(|| m49::V5.with(|v| assert_eq!(v.0.get(), 495)));
    drop(block);
    assert_eq!(dropped(), [495]);
}

#[test]
fn a_block_stays_within_the_bound() {
    // The SPEC's bound: the values with their alignment padding, a state
    // byte and a 4-byte link (the order of making) per value with a state
    // byte, and a header of at most 64 bytes.
    let stateful = with_a_state_byte();
    let sizes: usize = declarations().iter().map(|d| d.size()).sum();
    let padding: usize = declarations().iter().map(|d| d.align() - 1).sum::<usize>() + 3;
    let size = co_local::block_size();
    assert!(
        size <= 64 + sizes + 5 * stateful + padding,
        "{size} > 64 + {sizes} + 5 * {stateful} + {padding}"
    );
}
