//! The expansion compiles in the strictest user crate: no prelude, no unsafe
//! code allowed, every warning an error, and user items that shadow the names
//! the expansion could have used.
#![no_implicit_prelude]
#![forbid(unsafe_code)]
#![deny(warnings)]

#[allow(dead_code)]
mod core {}
#[allow(dead_code)]
mod std {}
#[allow(dead_code)]
mod linkme {}
#[allow(dead_code)]
type LocalKey = ();
#[allow(dead_code)]
struct Locals;
#[allow(dead_code)]
struct Declaration;
#[allow(dead_code)]
struct Option;

::co_local::co_local! {
    /// Documented.
    pub static A: ::std::cell::Cell<u32> = const { ::std::cell::Cell::new(1) };
    pub(crate) static B: ::std::cell::RefCell<::std::vec::Vec<u8>> = ::std::cell::RefCell::new(::std::vec::Vec::new());
    #[allow(non_upper_case_globals)]
    static c: u8 = 3
}

#[test]
fn strict_crate_uses_the_statics() {
    A.set(A.get() + 1);
    B.with_borrow_mut(|b| b.push(1));
    ::std::assert_eq!(A.get(), 2);
    ::std::assert_eq!(c.with(|v| *v), 3);
    ::std::assert_eq!(B.with_borrow(|b| b.len()), 1);
}

fn in_a_function() -> u32 {
    ::co_local::co_local! {
        static LOCAL_TO_FN: ::std::cell::Cell<u32> = const { ::std::cell::Cell::new(41) };
    }
    LOCAL_TO_FN.set(LOCAL_TO_FN.get() + 1);
    LOCAL_TO_FN.get()
}

#[test]
fn declaration_inside_a_function_body() {
    ::std::assert_eq!(in_a_function(), 42);
}
