//! Emission of one `LocalKey` static per declaration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, Type};

use crate::parse::{Decl, Inherit, Input};

pub(crate) fn expand(input: Input) -> TokenStream {
    let Input {
        krate,
        decls,
        errors,
    } = input;
    let errors = errors.map(|e| e.to_compile_error());
    let statics = decls.iter().map(|d| expand_decl(&krate, d));
    quote! {
        #errors
        #(#statics)*
    }
}

fn expand_decl(krate: &Ident, decl: &Decl) -> TokenStream {
    let Decl {
        attrs,
        vis,
        name,
        ty,
        init,
        is_const,
        inherit,
    } = decl;
    let doc = generated_doc(ty, *is_const);
    // The function that makes a new coroutine's copy: `Clone` (checked at
    // the type, with a message that says what to do), the user's
    // `fn(&T) -> T` (a type error at the path if it is not one), or one that
    // is never called. The paths that take the type carry its span, so that
    // an error about the type points at it, not at the invocation.
    let ty_span = ty.span();
    let (inherits, with) = match inherit {
        None => (
            false,
            quote_spanned! {ty_span=> #krate::__private::not_inherited::<#ty> },
        ),
        Some(Inherit::Clone) => (
            true,
            quote_spanned! {ty_span=> #krate::__private::inherit_clone::<#ty> },
        ),
        Some(Inherit::With(path)) => (true, quote! { #path }),
    };
    // Everything else is written by `co_local`'s own `macro_rules!` helper,
    // through `$crate`: the static, its initialiser's function, and the
    // registry entry paired with the key, the one `unsafe` of the
    // expansion. No token of the user's is placed inside that `unsafe` (the
    // helper binds each to an item outside it first), and no path the
    // caller chooses leads to it. Whether the value is a constant is read
    // there from the initialiser itself (`const { .. }`).
    quote! {
        #krate::__private::declare! {
            attrs: [#(#attrs)* #[doc = #doc]],
            vis: [#vis],
            name: #name,
            ty: #ty,
            init: [#init],
            inherit: [#inherits, #with],
        }
    }
}

/// The section added to each static's docs: what it is, how it is
/// initialised, and the accessors that apply to its type.
fn generated_doc(ty: &Type, is_const: bool) -> String {
    let init = if is_const {
        "Initialised from a constant (`const { }`): no initialiser runs. A type without a \
         destructor is already in place in every coroutine's block, and an access checks \
         nothing; a type with one is put in place on the first access in each block, and \
         only blocks that reached it run its destructor."
    } else {
        "Initialised lazily: the initialiser runs on the first access in each coroutine (and \
         in each thread, outside coroutines)."
    };
    let mut accessors = String::from(
        "[`with`](co_local::LocalKey::with), [`try_with`](co_local::LocalKey::try_with)",
    );
    match last_segment(ty).as_deref() {
        Some("Cell") => accessors.push_str(
            ", and for this `Cell`: [`set`](co_local::LocalKey::set), \
             [`replace`](co_local::LocalKey::replace), [`get`](co_local::LocalKey::get) \
             (if the content is `Copy`), [`take`](co_local::LocalKey::take) \
             (if it is `Default`)",
        ),
        Some("RefCell") => accessors.push_str(
            ", and for this `RefCell`: [`with_borrow`](co_local::LocalKey::with_borrow), \
             [`with_borrow_mut`](co_local::LocalKey::with_borrow_mut), \
             [`set`](co_local::LocalKey::set), [`replace`](co_local::LocalKey::replace), \
             [`take`](co_local::LocalKey::take) (if the content is `Default`)",
        ),
        _ => {}
    }
    format!(
        "\n\n# Coroutine-local\n\n\
         Declared with `co_local!`: each coroutine has its own copy of this value, and code \
         outside every coroutine has its thread's own copy.\n\n{init}\n\n\
         Accessors: {accessors}.",
    )
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}
