//! The expansion names nothing from the user's scope: it builds under
//! `#![no_implicit_prelude]`, `#![forbid(unsafe_code)]` and
//! `#![deny(warnings)]`, next to user items named like the ones it uses.

#![forbid(unsafe_code)]
#![deny(warnings)]
#![no_implicit_prelude]

// Items named like those the expansion uses; none may be picked up.
mod core {}
mod std {}
mod alloc {}
mod linkme {}
mod co_local {}
mod __private {}
type LocalKey = ();
type Locals = ();
type Declaration = ();
type DECLARATIONS = ();
type SendProbe = ();
type SendProof = ();
trait SendFallback {}
impl SendFallback for () {}
const __CO_LOCAL_DECLARATION: () = ();
fn __co_local_init() {}
macro_rules! module_path {
    () => {
        "not the module path"
    };
}
macro_rules! distributed_slice {
    () => {};
}

::co_local::co_local! {
    /// A constant.
    pub static COUNT: ::std::cell::Cell<u32> = const { ::std::cell::Cell::new(0) };
    /// A lazy value.
    static LOG: ::std::cell::RefCell<::std::vec::Vec<u32>> =
        ::std::cell::RefCell::new(::std::vec::Vec::new());
    /// A value whose type is not `Send`.
    static SHARED: ::std::cell::RefCell<::std::option::Option<::std::rc::Rc<u32>>> =
        const { ::std::cell::RefCell::new(::std::option::Option::None) };
}

mod nested {
    ::co_local::co_local! {
        pub(crate) static NESTED: ::std::cell::Cell<&'static str> = ::std::cell::Cell::new("nested");
    }
}

fn main() {
    let (): LocalKey = ();
    let (): Locals = ();
    let (): Declaration = ();
    let (): DECLARATIONS = ();
    let (): SendProbe = ();
    let (): SendProof = ();
    let _: &dyn SendFallback = &();
    let () = __CO_LOCAL_DECLARATION;
    __co_local_init();
    distributed_slice!();
    ::std::assert_eq!(module_path!(), "not the module path");

    COUNT.set(COUNT.get() + 1);
    ::std::assert_eq!(COUNT.get(), 1);
    LOG.with_borrow_mut(|log| log.push(COUNT.get()));
    ::std::assert_eq!(LOG.with_borrow(|log| log.len()), 1);
    ::std::assert_eq!(nested::NESTED.get(), "nested");
    nested::NESTED.set("changed");
    ::std::assert_eq!(nested::NESTED.get(), "changed");

    // The registry got the real module path, not the user's macro.
    let decl = COUNT.declaration();
    ::std::assert_eq!(decl.name(), "COUNT");
    ::std::assert!(!decl.module_path().contains("not the module path"));
    ::std::assert!(nested::NESTED.declaration().module_path().ends_with("::nested"));
    // Whether each type is `Send`, found despite the user's look-alikes.
    ::std::assert!(COUNT.declaration().is_send());
    ::std::assert!(!SHARED.declaration().is_send());
    ::std::assert!(nested::NESTED.declaration().is_send()); // `&'static str` is `Send`
}
