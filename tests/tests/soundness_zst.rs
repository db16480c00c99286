//! Zero-sized `const {}` values with a destructor (SPEC.md, "Soundness"):
//! they may share an address, but each is its own value while its block is
//! destroyed: a live one is reachable, a destroyed one is not.

use std::cell::RefCell;

use co_local::{co_local, Locals};

std::thread_local! {
    /// What each destructor saw of the other value: `Ok` if reachable.
    static SEEN: RefCell<Vec<(&'static str, bool)>> = const { RefCell::new(Vec::new()) };
}

struct First;
struct Second;

impl Drop for First {
    fn drop(&mut self) {
        let other_alive = SECOND.try_with(|_| ()).is_ok();
        let self_alive = FIRST.try_with(|_| ()).is_ok();
        assert!(
            !self_alive,
            "a value is reachable during its own destructor"
        );
        SEEN.with_borrow_mut(|s| s.push(("first", other_alive)));
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        let other_alive = FIRST.try_with(|_| ()).is_ok();
        let self_alive = SECOND.try_with(|_| ()).is_ok();
        assert!(
            !self_alive,
            "a value is reachable during its own destructor"
        );
        SEEN.with_borrow_mut(|s| s.push(("second", other_alive)));
    }
}

co_local! {
    static FIRST: First = const { First };
    static SECOND: Second = const { Second };
}

#[test]
fn zero_sized_constants_with_destructors_are_told_apart_during_destruction() {
    let mut block = Locals::new();
    block.enter(|| {
        FIRST.with(|_| ());
        SECOND.with(|_| ());
    });
    drop(block);
    let seen = SEEN.with_borrow_mut(std::mem::take);
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Whichever goes first sees the other alive; the second sees the first
    // destroyed.
    assert!(seen[0].1, "{seen:?}");
    assert!(!seen[1].1, "{seen:?}");
}
