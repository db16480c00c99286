//! Emission of one `LocalKey` static per declaration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Type;

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

fn expand_decl(krate: &TokenStream, decl: &Decl) -> TokenStream {
    let Decl {
        attrs,
        vis,
        static_token,
        name,
        ty,
        init,
        is_const,
        inherit,
    } = decl;
    let lazy = !is_const;
    let doc = generated_doc(ty, *is_const);
    let name_str = name.to_string();
    // The initializer's function has the user's type as its return type and
    // the user's expression as its body, so a type mismatch points at the
    // initializer (with the type named), and a `const { }` that is not
    // constant at the offending call. Its own tokens keep the macro's span,
    // so lints about the function's shape (clippy's `unused_unit` on a
    // `-> ()`) see generated code, while lints inside the user's expression
    // still apply. Two lints look at the shape anyway: braces around an
    // initializer and an always-`Some` or `Ok` one are fine in a static.
    let init_fn = quote! {
        #[allow(unused_braces, clippy::unnecessary_wraps)]
        fn __co_local_init() -> #ty {
            #init
        }
    };
    // The calls that take the type carry its span, so that an error about the
    // type (not `Sized`, not `'static`) points at it, not at the invocation.
    let ty_span = ty.span();
    let inherits = inherit.is_some();
    //
    // The two constructors are `unsafe`: a key must be made with its own
    // declaration, and that declaration must be in the registry. Only this
    // expansion pairs them, so safe code cannot make a key that reads
    // outside its block. The `unsafe` blocks carry the macro's own span (not
    // the user's), so `#![forbid(unsafe_code)]` in the user's crate does not
    // see them, as it does not see std's `thread_local!` internals.
    let new_declaration = quote_spanned! {ty_span=>
        #krate::__private::Declaration::private_new::<#ty>(
            &#name,
            #name_str,
            #krate::__private::module_path!(),
            #lazy,
            #inherits,
            <#krate::__private::SendProbe<#ty>>::PROOF,
        )
    };
    // The function that makes a new coroutine's copy: `Clone` (checked at
    // the attribute, with a message that says what to do), or the user's
    // `fn(&T) -> T` (a type error at the path if it is not one), or one that
    // is never called.
    let inherit_fn = match inherit {
        None => quote_spanned! {ty_span=> #krate::__private::not_inherited::<#ty> },
        Some(Inherit::Clone) => {
            quote_spanned! {ty_span=> #krate::__private::inherit_clone::<#ty> }
        }
        Some(Inherit::With(path)) => quote! {
            {
                let with: fn(&#ty) -> #ty = #path;
                with
            }
        },
    };
    let new_key = quote_spanned! {ty_span=>
        #krate::LocalKey::private_new(
            &__CO_LOCAL_DECLARATION,
            __co_local_init,
            #lazy,
            #inherit_fn,
            <#krate::__private::SendProbe<#ty>>::PROOF,
        )
    };
    let new_declaration = quote! { unsafe { #new_declaration } };
    let new_key = quote! { unsafe { #new_key } };
    quote! {
        #(#attrs)*
        #[doc = #doc]
        #vis #static_token #name: #krate::LocalKey<#ty> = {
            // The fallback of `SendProbe::PROOF` (`None`) for a type that is
            // not `Send`; imported without a name, so that it shadows nothing.
            use #krate::__private::SendFallback as _;
            #[#krate::__private::linkme::distributed_slice(#krate::__private::DECLARATIONS)]
            #[linkme(crate = #krate::__private::linkme)]
            static __CO_LOCAL_DECLARATION: #krate::__private::Declaration = #new_declaration;
            #init_fn
            #new_key
        };
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
