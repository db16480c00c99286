//! Parsing and validation of the `thread_local!` grammar.
//!
//! The input is cut at each `;` outside any group, and each piece (normally
//! one declaration) is parsed on its own: a mistake in one declaration is one
//! error, and the others are still expanded, so the user sees no cascade of
//! "cannot find value" errors. Where the intent is clear (`static mut`, `let`
//! instead of `static`, generics, a lifetime other than `'static`, a missing
//! `;` or initializer, ...), the mistake is reported and the declaration is
//! still expanded as if it were written correctly.

use std::collections::HashSet;

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::visit::Visit;
use syn::{Attribute, Expr, Ident, Lifetime, Token, Type, Visibility};

/// The whole invocation: `co_local`'s `$crate`, the declarations, and the
/// errors found in declarations that could still be expanded.
pub(crate) struct Input {
    pub(crate) krate: Ident,
    pub(crate) decls: Vec<Decl>,
    pub(crate) errors: Option<syn::Error>,
}

/// One `#[attrs] vis static NAME: TYPE = INIT;`.
pub(crate) struct Decl {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) name: Ident,
    pub(crate) ty: Type,
    pub(crate) init: Expr,
    /// `INIT` is a `const { }` block.
    pub(crate) is_const: bool,
    /// `#[inherit]` or `#[inherit(with = PATH)]`, taken out of `attrs`.
    pub(crate) inherit: Option<Inherit>,
}

/// How new coroutines get a copy of an inherited value.
pub(crate) enum Inherit {
    /// `#[inherit]`: `Clone`, checked at the type.
    Clone,
    /// `#[inherit(with = PATH)]`: a `fn(&T) -> T`, named by its path (not
    /// an expression: a closure would be code of the user's that the
    /// expansion places, and it takes no such code).
    With(syn::ExprPath),
}

/// Takes the `#[inherit]` attributes out of `attrs`, reporting misuse.
fn take_inherit(attrs: Vec<Attribute>, errors: &mut Errors) -> (Vec<Attribute>, Option<Inherit>) {
    let mut kept = Vec::with_capacity(attrs.len());
    let mut inherit = None;
    for attr in attrs {
        if !attr.path().is_ident("inherit") {
            kept.push(attr);
            continue;
        }
        if inherit.is_some() {
            errors.push(syn::Error::new_spanned(
                &attr,
                "`#[inherit]` is given twice; keep one",
            ));
            continue;
        }
        match &attr.meta {
            syn::Meta::Path(_) => inherit = Some(Inherit::Clone),
            syn::Meta::List(list) => match list.parse_args_with(parse_inherit_args) {
                Ok(with) => inherit = Some(Inherit::With(with)),
                Err(e) => errors.push(e),
            },
            syn::Meta::NameValue(nv) => errors.push(syn::Error::new_spanned(
                nv,
                "write `#[inherit]` (new coroutines get a `Clone` of the value) or \
                 `#[inherit(with = path::to::function)]` (a `fn(&T) -> T` makes their copy)",
            )),
        }
    }
    (kept, inherit)
}

/// Parses `with = PATH` inside `#[inherit(...)]`.
fn parse_inherit_args(input: ParseStream<'_>) -> syn::Result<syn::ExprPath> {
    let unknown = |span: Span, what: &str| {
        syn::Error::new(
            span,
            format!(
                "unknown argument `{what}` of `#[inherit]`; write `#[inherit]` (a `Clone` of the \
                 value) or `#[inherit(with = path::to::function)]` (a `fn(&T) -> T`)"
            ),
        )
    };
    if input.is_empty() {
        return Err(syn::Error::new(
            input.span(),
            "`#[inherit()]` needs `with = path::to::function`, or write `#[inherit]` alone",
        ));
    }
    let key: Ident = input
        .call(Ident::parse_any)
        .map_err(|e| unknown(e.span(), &input.to_string()))?;
    if key != "with" {
        return Err(unknown(key.span(), &key.to_string()));
    }
    input.parse::<Token![=]>()?;
    let path = match input.parse::<Expr>()? {
        Expr::Path(path) if path.attrs.is_empty() => path,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "`with` takes the path of a `fn(&T) -> T`, not an expression: write the copy \
                 as a function and name it here (`#[inherit(with = path::to::function)]`)",
            ))
        }
    };
    if input.peek(Token![,]) {
        input.parse::<Token![,]>()?;
    }
    if !input.is_empty() {
        let rest: TokenStream = input.parse()?;
        let first = rest.clone().into_iter().next();
        let span = first.as_ref().map_or_else(Span::call_site, TokenTree::span);
        let what = first.map_or_else(String::new, |t| t.to_string());
        return Err(unknown(span, &what));
    }
    Ok(path)
}

/// Every error of the invocation, reported together.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // Only `co_local!` may call this macro: it passes its `$crate`. Any
        // other path could name a module whose `__private` pairs keys with
        // another registry than co_local's.
        let krate = match input.parse::<TokenTree>() {
            Ok(TokenTree::Ident(krate)) if krate == "$crate" => krate,
            other => {
                let span = other.map_or_else(|_| input.span(), |t| t.span());
                return Err(syn::Error::new(
                    span,
                    "this macro is not public API: declare coroutine-local statics with \
                     `co_local::co_local!`",
                ));
            }
        };
        Input::declarations(krate, input)
    }
}

impl Input {
    /// The declarations after the crate path, each parsed on its own.
    fn declarations(krate: Ident, input: ParseStream<'_>) -> syn::Result<Self> {
        let mut decls = Vec::new();
        let mut errors = Errors::default();
        while !input.is_empty() {
            let piece = take_piece(input)?;
            let parse_piece = |piece: ParseStream<'_>| parse_piece(piece, &mut decls, &mut errors);
            if let Err(e) = parse_piece.parse2(piece) {
                errors.push(e);
            }
        }
        let decls = reject_duplicates(decls, &mut errors);
        Ok(Input {
            krate,
            decls,
            errors: errors.0,
        })
    }
}

/// Takes the tokens up to and including the next `;` outside any group. The
/// grammar has no other `;` at that level: one in a type or an initializer is
/// inside brackets or braces.
fn take_piece(input: ParseStream<'_>) -> syn::Result<TokenStream> {
    input.step(|cursor| {
        let mut rest = *cursor;
        let mut piece = TokenStream::new();
        while let Some((token, next)) = rest.token_tree() {
            rest = next;
            let end = matches!(&token, TokenTree::Punct(p) if p.as_char() == ';');
            piece.extend([token]);
            if end {
                break;
            }
        }
        Ok((piece, rest))
    })
}

/// Parses one piece: one declaration and its `;`, or more than one if a `;`
/// is missing between them.
///
/// A syntax error that syn reports ends the piece (the stream cannot be
/// trusted after it); the mistakes checked here by looking ahead are pushed
/// to `errors` and parsing goes on.
fn parse_piece(
    input: ParseStream<'_>,
    decls: &mut Vec<Decl>,
    errors: &mut Errors,
) -> syn::Result<()> {
    if input.peek(Token![;]) {
        let semi: Token![;] = input.parse()?;
        return Err(syn::Error::new(
            semi.span,
            "unexpected `;` between co_local! declarations; remove it",
        ));
    }
    while !input.is_empty() {
        if let Some(decl) = parse_decl(input, errors)? {
            decls.push(decl);
        }
    }
    Ok(())
}

/// Parses `#[attrs] vis static NAME: TYPE = INIT` and the `;` after it.
/// `None` if the piece held no `static` at all (the error is pushed).
fn parse_decl(input: ParseStream<'_>, errors: &mut Errors) -> syn::Result<Option<Decl>> {
    let attrs = input.call(Attribute::parse_outer)?;
    let (attrs, inherit) = take_inherit(attrs, errors);
    let vis: Visibility = input.parse()?;
    if parse_static_keyword(input, errors)?.is_none() {
        return Ok(None);
    }

    if let Some(mut_token) = input.parse::<Option<Token![mut]>>()? {
        errors.push(syn::Error::new(
            mut_token.span,
            "co_local! statics cannot be `static mut`; remove `mut` and use `Cell` or `RefCell` for a value that changes",
        ));
    }
    if let Some(ref_token) = input.parse::<Option<Token![ref]>>()? {
        errors.push(syn::Error::new(
            ref_token.span,
            "co_local! statics are not `static ref`; remove `ref` (an initializer already runs lazily, on first access)",
        ));
    }

    let name: Ident = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the name of the static: `static NAME: TYPE = INIT;`",
        )
    })?;

    if input.peek(Token![<]) {
        let generics: syn::Generics = input.parse()?;
        errors.push(syn::Error::new_spanned(
            &generics,
            "co_local! statics cannot be generic; declare one static per concrete type",
        ));
    }

    let missing_type = |span: Span| {
        syn::Error::new(
            span,
            format!(
                "missing type for co_local! static `{name}`; write `static {name}: TYPE = INIT;`"
            ),
        )
    };
    if !input.peek(Token![:]) || input.peek(Token![::]) {
        return Err(missing_type(next_span(input, name.span())));
    }
    let colon: Token![:] = input.parse()?;
    if input.is_empty() || input.peek(Token![=]) || input.peek(Token![;]) {
        return Err(missing_type(next_span(input, colon.span)));
    }
    let mut ty: Type = input.parse()?;
    check_type(&ty)?;
    let rejected = reject_lifetimes(&ty, errors);
    if !rejected.is_empty() {
        // Expand with `'static` in their place: no second error on them.
        ty = with_static_lifetimes(ty, &rejected);
    }

    if input.peek(Token![where]) {
        let where_clause: syn::WhereClause = input.parse()?;
        errors.push(syn::Error::new_spanned(
            where_clause,
            "co_local! statics cannot have a `where` clause; declare one static per concrete type",
        ));
    }

    let eq = input.parse::<Option<Token![=]>>()?;
    let at_end = input.is_empty() || input.peek(Token![;]);
    let (init, is_const) = match (eq, at_end) {
        (Some(_), false) => {
            let init: Expr = input.parse()?;
            let is_const = matches!(init, Expr::Const(_));
            (init, is_const)
        }
        (None, false) => {
            return Err(syn::Error::new(
                next_span(input, name.span()),
                format!(
                    "expected `=` and the initializer of co_local! static `{name}`, found `{}`",
                    next_token(input)
                ),
            ));
        }
        (eq, true) => {
            errors.push(syn::Error::new(
                next_span(input, eq.map_or(name.span(), |eq| eq.span)),
                format!(
                    "missing initializer for co_local! static `{name}`; write `= EXPR;` (run lazily in each coroutine) or `= const {{ EXPR }};` (a constant)"
                ),
            ));
            // Expand with an initializer of any type: no error on the uses.
            (syn::parse_quote!(loop {}), false)
        }
    };

    if input.peek(Token![;]) {
        input.parse::<Token![;]>()?;
    } else if !input.is_empty() {
        errors.push(syn::Error::new(
            next_span(input, name.span()),
            format!(
                "expected `;` after the initializer of `{name}`, found `{}`",
                next_token(input)
            ),
        ));
        // Go on with the next declaration, if one follows.
        skip_to_static(input)?;
    }

    Ok(Some(Decl {
        attrs,
        vis,
        name,
        ty,
        init,
        is_const,
        inherit,
    }))
}

/// Parses `static`, or reports what stands in its place. `let NAME`,
/// `const NAME` and a bare `NAME:` are taken as `static`; anything else is
/// skipped up to the next `static` of the piece, if any.
fn parse_static_keyword(
    input: ParseStream<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<Token![static]>> {
    if input.peek(Token![static]) {
        return input.parse().map(Some);
    }
    if input.peek(Token![let]) {
        let let_token: Token![let] = input.parse()?;
        errors.push(syn::Error::new(
            let_token.span,
            "co_local! declares statics: write `static` instead of `let`",
        ));
        return Ok(Some(Token![static](let_token.span)));
    }
    if input.peek(Token![const]) && input.peek2(Ident) {
        let const_token: Token![const] = input.parse()?;
        errors.push(syn::Error::new(
            const_token.span,
            "co_local! declares statics, not constants: write `static NAME: TYPE = const { EXPR };`",
        ));
        return Ok(Some(Token![static](const_token.span)));
    }
    if input.peek(Ident) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
        let name: Ident = input.fork().parse()?;
        errors.push(syn::Error::new(
            name.span(),
            format!("missing `static` before `{name}`; write `static {name}: TYPE = INIT;`"),
        ));
        return Ok(Some(Token![static](name.span())));
    }
    errors.push(wrong_item_kind(input));
    if skip_to_static(input)? {
        input.parse().map(Some)
    } else {
        Ok(None)
    }
}

/// The error for an item that is not a `static`, or stray tokens: point at
/// the first token.
fn wrong_item_kind(input: ParseStream<'_>) -> syn::Error {
    if input.is_empty() {
        return input.error("expected `static NAME: TYPE = INIT;` after the attributes");
    }
    let what = next_token(input);
    let msg = match what.as_str() {
        "fn" | "struct" | "enum" | "union" | "type" | "trait" | "impl" | "mod" | "use" => {
            format!(
                "co_local! declares statics, not `{what}` items: write `static NAME: TYPE = INIT;`"
            )
        }
        _ => format!("expected `static NAME: TYPE = INIT;`, found `{what}`"),
    };
    syn::Error::new(next_span(input, Span::call_site()), msg)
}

/// Skips tokens up to the next `static` of the piece. `false` if there is none
/// (the piece is then used up).
fn skip_to_static(input: ParseStream<'_>) -> syn::Result<bool> {
    input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((token, next)) = rest.token_tree() {
            if matches!(&token, TokenTree::Ident(i) if i == "static") {
                return Ok((true, rest));
            }
            rest = next;
        }
        Ok((false, rest))
    })
}

/// The span of the next token, or `fallback` at the end of the piece.
fn next_span(input: ParseStream<'_>, fallback: Span) -> Span {
    input
        .cursor()
        .token_tree()
        .map_or(fallback, |(token, _)| token.span())
}

/// The next token as written, for messages.
fn next_token(input: ParseStream<'_>) -> String {
    match input.cursor().token_tree() {
        Some((TokenTree::Group(g), _)) => {
            let (open, close) = match g.delimiter() {
                proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                proc_macro2::Delimiter::Brace => ("{", "}"),
                proc_macro2::Delimiter::Bracket => ("[", "]"),
                proc_macro2::Delimiter::None => return g.stream().to_string(),
            };
            if g.stream().is_empty() {
                format!("{open}{close}")
            } else {
                format!("{open} .. {close}")
            }
        }
        Some((token, _)) => token.to_string(),
        None => String::new(),
    }
}

/// Rejects the types no expansion could accept: `_` anywhere, and a type
/// that is unsized as written (`str`, a slice, a trait object).
fn check_type(ty: &Type) -> syn::Result<()> {
    struct Infer(Option<Span>);
    impl<'ast> Visit<'ast> for Infer {
        fn visit_type_infer(&mut self, infer: &'ast syn::TypeInfer) {
            self.0.get_or_insert(infer.underscore_token.span);
        }
    }
    let mut infer = Infer(None);
    infer.visit_type(ty);
    if let Some(span) = infer.0 {
        return Err(syn::Error::new(
            span,
            "co_local! statics need their type written out; replace `_` with the type of the value",
        ));
    }
    let mut outer = ty;
    while let Type::Paren(syn::TypeParen { elem, .. }) | Type::Group(syn::TypeGroup { elem, .. }) =
        outer
    {
        outer = elem;
    }
    let unsized_ = match outer {
        Type::Slice(_) | Type::TraitObject(_) => true,
        Type::Path(p) => p.qself.is_none() && p.path.is_ident("str"),
        _ => false,
    };
    if unsized_ {
        return Err(syn::Error::new_spanned(
            ty,
            "co_local! values need a size known at compile time; use a `Box` or a `&'static` reference to this type",
        ));
    }
    Ok(())
}

/// Reports every lifetime in the type other than `'static` and those bound
/// by `for<..>` inside it; returns their names.
fn reject_lifetimes(ty: &Type, errors: &mut Errors) -> HashSet<Ident> {
    struct Lifetimes<'e> {
        errors: &'e mut Errors,
        bound: Vec<Ident>,
        rejected: HashSet<Ident>,
    }
    impl Lifetimes<'_> {
        fn with_bound(
            &mut self,
            bound: Option<&syn::BoundLifetimes>,
            walk: impl FnOnce(&mut Self),
        ) {
            let depth = self.bound.len();
            if let Some(bound) = bound {
                self.bound
                    .extend(bound.lifetimes.iter().filter_map(|param| match param {
                        syn::GenericParam::Lifetime(l) => Some(l.lifetime.ident.clone()),
                        _ => None,
                    }));
            }
            walk(self);
            self.bound.truncate(depth);
        }
    }
    impl<'ast> Visit<'ast> for Lifetimes<'_> {
        fn visit_type_bare_fn(&mut self, f: &'ast syn::TypeBareFn) {
            self.with_bound(f.lifetimes.as_ref(), |v| {
                syn::visit::visit_type_bare_fn(v, f)
            });
        }
        fn visit_trait_bound(&mut self, b: &'ast syn::TraitBound) {
            self.with_bound(b.lifetimes.as_ref(), |v| {
                syn::visit::visit_trait_bound(v, b)
            });
        }
        fn visit_lifetime(&mut self, lifetime: &'ast Lifetime) {
            if lifetime.ident == "static" || self.bound.contains(&lifetime.ident) {
                return;
            }
            self.rejected.insert(lifetime.ident.clone());
            self.errors.push(syn::Error::new(
                lifetime.span(),
                format!(
                    "co_local! values must be `'static`; use `'static` instead of `{lifetime}`"
                ),
            ));
        }
    }
    let mut visitor = Lifetimes {
        errors,
        bound: Vec::new(),
        rejected: HashSet::new(),
    };
    visitor.visit_type(ty);
    visitor.rejected
}

/// The type with the lifetimes named in `rejected` replaced by `'static`.
fn with_static_lifetimes(ty: Type, rejected: &HashSet<Ident>) -> Type {
    fn rewrite(tokens: TokenStream, rejected: &HashSet<Ident>) -> TokenStream {
        let mut out = TokenStream::new();
        let mut after_quote = false;
        for token in tokens {
            let token = match token {
                TokenTree::Group(g) => {
                    let mut group = Group::new(g.delimiter(), rewrite(g.stream(), rejected));
                    group.set_span(g.span());
                    TokenTree::Group(group)
                }
                TokenTree::Ident(i) if after_quote && rejected.contains(&i) => {
                    TokenTree::Ident(Ident::new("static", i.span()))
                }
                token => token,
            };
            after_quote = matches!(&token, TokenTree::Punct(p) if p.as_char() == '\'');
            out.extend([token]);
        }
        out
    }
    syn::parse2(rewrite(ty.to_token_stream(), rejected)).unwrap_or(ty)
}

/// Keeps the first of each name (declarations under `#[cfg]` aside) and
/// reports the others on their name.
fn reject_duplicates(decls: Vec<Decl>, errors: &mut Errors) -> Vec<Decl> {
    let mut seen = HashSet::new();
    decls
        .into_iter()
        .filter(|decl| {
            let has_cfg = decl.attrs.iter().any(|a| a.path().is_ident("cfg"));
            if has_cfg || seen.insert(decl.name.unraw().to_string()) {
                return true;
            }
            errors.push(syn::Error::new(
                decl.name.span(),
                format!(
                    "`{}` is declared twice in this co_local! invocation; rename one of them",
                    decl.name
                ),
            ));
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use quote::{quote, ToTokens};

    use syn::parse::Parser;

    use super::Input;

    #[test]
    fn a_path_other_than_co_locals_crate_is_refused() {
        let error = syn::parse2::<Input>(quote!(co_local static A: u8 = 0;))
            .err()
            .expect("refused");
        assert!(error.to_string().contains("not public API"), "{error}");
    }

    /// The declarations of an invocation, parsed.
    fn input(tokens: proc_macro2::TokenStream) -> Input {
        let krate = proc_macro2::Ident::new("co_local", proc_macro2::Span::call_site());
        let declarations = |input: syn::parse::ParseStream<'_>| Input::declarations(krate, input);
        declarations.parse2(tokens).expect("always parses")
    }

    /// Parses the declarations of an invocation into the names it would
    /// expand and the messages of its errors.
    fn parse(tokens: proc_macro2::TokenStream) -> (Vec<String>, Vec<String>) {
        let input = input(tokens);
        let names = input.decls.iter().map(|d| d.name.to_string()).collect();
        let errors = input
            .errors
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        (names, errors)
    }

    #[test]
    fn every_form_parses_without_error() {
        let (names, errors) = parse(quote! {
            /// Doc.
            #[allow(dead_code)]
            pub static A: Cell<u32> = const { Cell::new(0) };
            pub(crate) static B: RefCell<Vec<u8>> = RefCell::new(Vec::new());
            static C: for<'a> fn(&'a str) -> &'a str = str::trim;
            static D: &'static str = "d";
            static E: [u8; 2] = { let x = [1; 2]; x }
        });
        assert_eq!(names, ["A", "B", "C", "D", "E"]);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn empty_invocation_is_fine() {
        assert_eq!(parse(quote! {}), (vec![], vec![]));
    }

    #[test]
    fn stray_tokens_do_not_lose_the_next_declaration() {
        let (names, errors) = parse(quote! {
            static A: u32 = 1;
            oops
            static B: u32 = 2;
        });
        assert_eq!(names, ["A", "B"]);
        assert_eq!(
            errors,
            ["expected `static NAME: TYPE = INIT;`, found `oops`"]
        );
    }

    #[test]
    fn a_missing_semicolon_keeps_both_declarations() {
        let (names, errors) = parse(quote! {
            static A: u32 = 1
            static B: u32 = 2;
        });
        assert_eq!(names, ["A", "B"]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("expected `;` after the initializer of `A`"));
    }

    #[test]
    fn a_syntax_error_ends_only_its_own_declaration() {
        let (names, errors) = parse(quote! {
            static A: u32 = add(1 2);
            static B = 2;
            static C: u32 = 3;
        });
        assert_eq!(names, ["C"]);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0], "expected `,`");
        assert!(errors[1].starts_with("missing type for co_local! static `B`"));
    }

    #[test]
    fn a_stray_semicolon_and_a_missing_equals_sign() {
        let (names, errors) = parse(quote! {
            static A: u32 = 1;;
            static B: u32 2;
            static C: u32 = 3;
        });
        assert_eq!(names, ["A", "C"]);
        assert_eq!(
            errors,
            [
                "unexpected `;` between co_local! declarations; remove it",
                "expected `=` and the initializer of co_local! static `B`, found `2`",
            ]
        );
    }

    #[test]
    fn recoverable_mistakes_still_expand() {
        let (names, errors) = parse(quote! {
            static mut A: u32 = 1;
            let B: u32 = 2;
            const C: u32 = 3;
            D: u32 = 4;
            static E: u32;
            static ref F: u32 = 6;
            static G<T>: u32 = 7;
            static H: u32 where u32: Copy = 8;
        });
        assert_eq!(names, ["A", "B", "C", "D", "E", "F", "G", "H"]);
        assert_eq!(errors.len(), 8, "{errors:?}");
    }

    #[test]
    fn other_lifetimes_are_reported_and_replaced_by_static() {
        let input = input(quote! {
            static A: (&'a str, for<'b> fn(&'b u8), &'static u8) = todo!();
        });
        let errors: Vec<String> = input
            .errors
            .into_iter()
            .flatten()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors,
            ["co_local! values must be `'static`; use `'static` instead of `'a`"]
        );
        let ty = input.decls[0].ty.to_token_stream().to_string();
        assert_eq!(
            ty,
            quote!((&'static str, for<'b> fn(&'b u8), &'static u8)).to_string()
        );
    }

    #[test]
    fn duplicates_are_reported_once_unless_under_cfg() {
        let (names, errors) = parse(quote! {
            static A: u32 = 1;
            static r#A: u32 = 2;
            #[cfg(unix)]
            static B: u32 = 3;
            #[cfg(not(unix))]
            static B: u32 = 4;
        });
        assert_eq!(names, ["A", "B", "B"]);
        assert_eq!(
            errors,
            ["`r#A` is declared twice in this co_local! invocation; rename one of them"]
        );
    }

    #[test]
    fn types_no_expansion_accepts_are_rejected() {
        for (ty, message) in [
            (quote!(_), "co_local! statics need their type written out"),
            (
                quote!(Vec<_>),
                "co_local! statics need their type written out",
            ),
            (
                quote!(str),
                "co_local! values need a size known at compile time",
            ),
            (
                quote!([u8]),
                "co_local! values need a size known at compile time",
            ),
            (
                quote!(dyn Fn()),
                "co_local! values need a size known at compile time",
            ),
        ] {
            let (names, errors) = parse(quote!(static A: #ty = todo!();));
            assert!(names.is_empty());
            assert_eq!(errors.len(), 1);
            assert!(errors[0].starts_with(message), "{ty}: {errors:?}");
        }
    }

    #[test]
    fn a_thousand_declarations() {
        let decls = (0..1000).map(|i| {
            let name = quote::format_ident!("V{i}");
            quote!(static #name: u32 = #i;)
        });
        let (names, errors) = parse(quote!(#(#decls)*));
        assert_eq!(names.len(), 1000);
        assert!(errors.is_empty());
    }
}
