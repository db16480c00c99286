//! Every form of the `co_local!` grammar compiles, carries its attributes and
//! visibility over, and each static works when used.

#![deny(warnings)]

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use co_local::{co_local, LocalKey, Locals};

// An empty invocation is accepted, like `thread_local! {}`: a macro that
// forwards a possibly empty list of declarations needs no special case, and
// declaring nothing is not a mistake worth an error.
co_local! {}

// Several declarations, the last `;` present.
co_local! {
    /// A doc comment,
    /// on two lines.
    static DOC: Cell<u32> = const { Cell::new(1) };

    #[doc = "An attribute doc."]
    static LAZY: RefCell<Vec<String>> = RefCell::new(vec![String::from("lazy")]);

    // `#[allow]` must carry over: `deny(warnings)` rejects this name otherwise.
    #[allow(non_upper_case_globals)]
    static lower_case: Cell<u8> = const { Cell::new(2) };

    // `#[cfg]` must carry over: this type does not exist.
    #[cfg(any())]
    static GONE: DoesNotExist = DoesNotExist::new();

    // The same name twice is fine when `#[cfg]` keeps one of them.
    #[cfg(unix)]
    static PLATFORM: &'static str = "unix";
    #[cfg(not(unix))]
    static PLATFORM: &'static str = "other";

    pub static PUBLIC: Cell<i64> = const { Cell::new(-1) };
    pub(crate) static CRATE: Cell<bool> = const { Cell::new(false) };

    // Values need `'static` only: not `Send`, not `Sync`.
    static SHARED: Rc<RefCell<Vec<u8>>> = Rc::new(RefCell::new(Vec::new()));
    static NAME: &'static str = "main";
    static EMPTY: () = const { () };
    // Braces and an always-`Some` initializer draw no lint from the expansion.
    static BRACED: u32 = { 2 + 3 };
    static SOME: Option<u32> = Some(6);
    static ARRAY: [u16; 3] = const { [1, 2, 3] };
    static BOXED: Box<dyn Fn(u32) -> u32> = Box::new(|x| x + 1);
    static FN_PTR: for<'a> fn(&'a str) -> &'a str = str::trim;
}

// The last `;` omitted, and a single declaration.
co_local! {
    static NO_SEMI: Cell<u32> = const { Cell::new(3) }
}

co_local! {
    static LAZY_NO_SEMI: String = String::from("no semi")
}

mod module {
    use std::cell::Cell;

    co_local::co_local! {
        pub(super) static IN_MODULE: Cell<u32> = const { Cell::new(4) };
        pub(in crate::module) static INNER: Cell<u32> = Cell::new(5);
    }

    pub fn inner() -> u32 {
        INNER.get()
    }
}

// Declared inside a function body, like a function-local `thread_local!`.
fn next_id() -> u32 {
    co_local! {
        static NEXT: Cell<u32> = const { Cell::new(0) };
    }
    NEXT.set(NEXT.get() + 1);
    NEXT.get()
}

fn assert_key<T>(_: &'static LocalKey<T>) {}

fn main() {
    assert_eq!(DOC.get(), 1);
    DOC.set(10);
    assert_eq!(DOC.replace(11), 10);
    assert_eq!(DOC.take(), 11);

    LAZY.with_borrow_mut(|v| v.push(String::from("pushed")));
    assert_eq!(LAZY.with_borrow(|v| v.join(" ")), "lazy pushed");
    assert_eq!(LAZY.take().len(), 2);

    assert_eq!(lower_case.get(), 2);
    assert_eq!(PLATFORM.with(|p| *p), if cfg!(unix) { "unix" } else { "other" });

    PUBLIC.set(PUBLIC.get() * 7);
    assert_eq!(PUBLIC.get(), -7);
    CRATE.set(true);
    assert!(CRATE.get());

    let shared = SHARED.with(Rc::clone);
    shared.borrow_mut().push(8);
    assert_eq!(SHARED.with(|s| s.borrow().clone()), [8]);
    assert_eq!(NAME.with(|n| n.len()), 4);
    EMPTY.with(|()| {});
    assert_eq!(BRACED.with(|b| *b), 5);
    assert_eq!(SOME.with(|s| *s), Some(6));
    assert_eq!(ARRAY.with(|a| a.iter().sum::<u16>()), 6);
    assert_eq!(BOXED.with(|f| f(1)), 2);
    assert_eq!(FN_PTR.with(|f| f(" x ")), "x");

    assert_eq!(NO_SEMI.get(), 3);
    assert_eq!(LAZY_NO_SEMI.with(|s| s.clone()), "no semi");
    assert_eq!(module::IN_MODULE.get(), 4);
    assert_eq!(module::inner(), 5);

    assert_eq!(next_id(), 1);
    assert_eq!(next_id(), 2);

    // Each block has its own copy, for declarations of every form.
    let mut block = Locals::new();
    block.enter(|| {
        assert_eq!(DOC.get(), 1);
        assert_eq!(next_id(), 1);
        assert_eq!(LAZY.with_borrow(|v| v.len()), 1);
        assert!(!CRATE.get());
    });
    assert_eq!(next_id(), 3);

    assert_key(&DOC);
    assert_key::<Rc<RefCell<Vec<u8>>>>(&SHARED);
    assert_eq!(DOC.declaration().name(), "DOC");
    assert!(DOC.declaration().is_const());
    assert!(!LAZY.declaration().is_const());
}
