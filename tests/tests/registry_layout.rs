//! The registry and the block layout, seen from outside: introspection agrees
//! with the declared types, and alignment holds in every block.

use std::cell::Cell;
use std::mem::{align_of, size_of};

use co_local::{co_local, declarations, Locals};

#[repr(align(4096))]
struct Page([u8; 4096]);

#[repr(align(64))]
struct CacheLine(Cell<u64>);

#[derive(Clone, Copy)]
struct Zst;

co_local! {
    static PAGE: Cell<Option<&'static Page>> = const { Cell::new(None) };
    static BIG: Page = Page([1; 4096]);
    static LINE: CacheLine = const { CacheLine(Cell::new(3)) };
    static NOTHING: Zst = Zst;
    static NOTHING_CONST: Zst = const { Zst };
    static BYTE: Cell<u8> = const { Cell::new(0xab) };
}

fn find(name: &str) -> &'static co_local::Declaration {
    declarations()
        .iter()
        .find(|d| d.name() == name && d.module_path().ends_with("registry_layout"))
        .unwrap_or_else(|| panic!("{name} not registered"))
}

#[test]
fn declarations_agree_with_the_types() {
    let big = find("BIG");
    assert_eq!(
        (big.size(), big.align()),
        (size_of::<Page>(), align_of::<Page>())
    );
    assert!(!big.is_const());
    assert!(big.type_name().ends_with("Page"));
    let line = find("LINE");
    assert_eq!((line.size(), line.align()), (64, 64));
    assert!(line.is_const());
    let zst = find("NOTHING");
    assert_eq!((zst.size(), zst.align()), (0, 1));
    assert_eq!(find("BYTE").size(), 1);
    assert_eq!(find("PAGE").module_path(), module_path!());
    assert!(std::ptr::eq(BIG.declaration(), big));
}

#[test]
fn block_size_covers_every_value() {
    let sum: usize = declarations().iter().map(|d| d.size()).sum();
    let states = declarations().iter().filter(|d| !d.is_const()).count();
    let padding: usize = declarations().iter().map(|d| d.align() - 1).sum();
    let size = co_local::block_size();
    assert!(size >= sum + states, "{size} < {sum} + {states}");
    assert!(size <= 64 + sum + states + padding, "{size} too large");
}

#[test]
fn alignment_holds_in_every_block() {
    let mut blocks: Vec<Locals> = (0..4).map(|_| Locals::new()).collect();
    for block in &mut blocks {
        block.enter(|| {
            BIG.with(|p| {
                assert_eq!(p as *const Page as usize % 4096, 0);
                assert_eq!(p.0[4095], 1);
            });
            LINE.with(|l| {
                assert_eq!(l as *const CacheLine as usize % 64, 0);
                assert_eq!(l.0.get(), 3);
                l.0.set(4);
            });
            NOTHING.with(|z| assert_eq!(z as *const Zst as usize % align_of::<Zst>(), 0));
            NOTHING_CONST.with(|_| ());
            assert_eq!(BYTE.get(), 0xab);
            assert!(PAGE.get().is_none());
        });
    }
    // Outside every block: the thread's own copy.
    BIG.with(|p| assert_eq!(p as *const Page as usize % 4096, 0));
    assert_eq!(LINE.with(|l| l.0.get()), 3);
}
