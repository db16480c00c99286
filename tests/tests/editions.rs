//! Declarations from crates of editions 2015 and 2024 share the blocks.

use co_local::Locals;
use co_local_test_edition2015::{nested::NAME_2015, COUNT_2015};
use co_local_test_edition2024::{COUNT_2024, NAME_2024};

#[test]
fn declarations_from_every_edition_work_in_one_block() {
    let mut block = Locals::new();
    block.enter(|| {
        assert_eq!(co_local_test_edition2015::bump(), 2016);
        assert_eq!(co_local_test_edition2024::bump(), 2025);
        NAME_2015.with(|n| assert_eq!(n, "twenty-fifteen"));
        NAME_2024.with(|n| assert_eq!(n, "twenty-twenty-four"));
    });
    assert_eq!(COUNT_2015.get(), 2015, "the thread's own copy is untouched");
    assert_eq!(COUNT_2024.get(), 2024);
    assert_eq!(
        block.enter(|| COUNT_2015.get() + COUNT_2024.get()),
        2016 + 2025
    );
}
