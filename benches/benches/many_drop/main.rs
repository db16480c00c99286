//! The main suite's blocks and creation groups in a binary with 2,000 more
//! declarations whose type has drop glue (`thousand_drop.rs`, made by
//! `benches/gen_thousand.py`), none of which the cases touch: a block's life
//! must cost what it used, not what the binary declares. It serves the
//! requests of `ratios` and `instructions`; run alone, it prints its block
//! figures.

#[path = "../common/mod.rs"]
mod common;
mod thousand_drop;

fn main() {
    co_local_benches::serve(&common::groups());
    // Keep the declarations linked: they are only ever reached here.
    thousand_drop::CONST_VEC_0999.with_borrow(|v| std::hint::black_box(v.len()));
    println!("{}", co_local_benches::system::BlockInfo::of_this_binary());
}
