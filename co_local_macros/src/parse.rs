//! Parsing and validation of the `thread_local!` grammar.

use proc_macro2::{TokenStream, TokenTree};
use syn::parse::{Parse, ParseStream};
use syn::visit::Visit;
use syn::{Attribute, Expr, Ident, Lifetime, Token, Type, Visibility};

/// The whole invocation: the path of `co_local` (`$crate`), the declarations,
/// and the errors found in declarations that could still be expanded.
pub(crate) struct Input {
    pub(crate) krate: TokenStream,
    pub(crate) decls: Vec<Decl>,
    pub(crate) errors: Option<syn::Error>,
}

/// One `#[attrs] vis static NAME: TYPE = INIT;`.
pub(crate) struct Decl {
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) static_token: Token![static],
    pub(crate) name: Ident,
    pub(crate) ty: Type,
    pub(crate) init: Expr,
    /// `INIT` is a `const { }` block.
    pub(crate) is_const: bool,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let krate: TokenTree = input.parse()?;
        let mut decls: Vec<Decl> = Vec::new();
        let mut errors: Option<syn::Error> = None;
        let mut push_error = |e: syn::Error| match &mut errors {
            Some(all) => all.combine(e),
            None => errors = Some(e),
        };
        while !input.is_empty() {
            let decl = parse_decl(input, &mut push_error)?;
            let has_cfg = |d: &Decl| d.attrs.iter().any(|a| a.path().is_ident("cfg"));
            if !has_cfg(&decl) {
                if let Some(first) = decls.iter().find(|d| d.name == decl.name && !has_cfg(d)) {
                    let mut e = syn::Error::new(
                        decl.name.span(),
                        format!(
                            "`{}` is declared twice in this co_local! invocation; rename one of them",
                            decl.name
                        ),
                    );
                    e.combine(syn::Error::new(
                        first.name.span(),
                        format!("first declaration of `{}` here", first.name),
                    ));
                    push_error(e);
                    continue;
                }
            }
            decls.push(decl);
        }
        Ok(Input {
            krate: krate.into(),
            decls,
            errors,
        })
    }
}

fn parse_decl(
    input: ParseStream<'_>,
    push_error: &mut impl FnMut(syn::Error),
) -> syn::Result<Decl> {
    let attrs = input.call(Attribute::parse_outer)?;
    let vis: Visibility = input.parse()?;

    if !input.peek(Token![static]) {
        return Err(wrong_item_kind(input));
    }
    let static_token: Token![static] = input.parse()?;

    if let Some(mut_token) = input.parse::<Option<Token![mut]>>()? {
        push_error(syn::Error::new(
            mut_token.span,
            "co_local! statics cannot be `static mut`; remove `mut` and use `Cell` or `RefCell` for a value that changes",
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
        push_error(syn::Error::new_spanned(
            &generics,
            "co_local! statics cannot be generic; declare one static per concrete type",
        ));
    }

    if !input.peek(Token![:]) {
        let span = input
            .cursor()
            .token_tree()
            .map_or(name.span(), |(t, _)| t.span());
        return Err(syn::Error::new(
            span,
            format!(
                "missing type for co_local! static `{name}`; write `static {name}: TYPE = INIT;`"
            ),
        ));
    }
    input.parse::<Token![:]>()?;
    let ty: Type = input.parse()?;
    check_lifetimes(&ty, push_error);

    if input.peek(Token![where]) {
        let where_clause: syn::WhereClause = input.parse()?;
        push_error(syn::Error::new_spanned(
            where_clause,
            "co_local! statics cannot have a `where` clause; declare one static per concrete type",
        ));
    }

    if !input.peek(Token![=]) {
        let span = input
            .cursor()
            .token_tree()
            .map_or(name.span(), |(t, _)| t.span());
        return Err(syn::Error::new(
            span,
            format!(
                "missing initializer for co_local! static `{name}`; write `= EXPR;` (run lazily in each coroutine) or `= const {{ EXPR }};` (a constant)"
            ),
        ));
    }
    input.parse::<Token![=]>()?;
    let init: Expr = input.parse()?;
    let is_const = matches!(init, Expr::Const(_));

    if !input.is_empty() {
        input.parse::<Token![;]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected `;` after the initializer: co_local! declarations are separated by `;`",
            )
        })?;
    }

    Ok(Decl {
        attrs,
        vis,
        static_token,
        name,
        ty,
        init,
        is_const,
    })
}

/// The error for an item that is not a `static`: point at its keyword.
fn wrong_item_kind(input: ParseStream<'_>) -> syn::Error {
    let Some((token, _)) = input.cursor().token_tree() else {
        return input.error("expected `static NAME: TYPE = INIT;` after the attributes");
    };
    let what = token.to_string();
    let msg = match what.as_str() {
        "let" => "co_local! declares statics: write `static` instead of `let`".to_string(),
        "const" => "co_local! declares statics: write `static NAME: TYPE = const { EXPR };` instead of a `const` item".to_string(),
        "fn" | "struct" | "enum" | "union" | "type" | "trait" | "impl" | "mod" | "use" => {
            format!("co_local! declares statics, not `{what}` items: write `static NAME: TYPE = INIT;`")
        }
        _ => format!("expected `static`, found `{what}`: co_local! declarations read `static NAME: TYPE = INIT;`"),
    };
    syn::Error::new(token.span(), msg)
}

/// Reports every lifetime in the type other than `'static`.
fn check_lifetimes(ty: &Type, push_error: &mut impl FnMut(syn::Error)) {
    struct Lifetimes<'e, F>(&'e mut F);
    impl<'ast, F: FnMut(syn::Error)> Visit<'ast> for Lifetimes<'_, F> {
        fn visit_lifetime(&mut self, lifetime: &'ast Lifetime) {
            if lifetime.ident != "static" {
                (self.0)(syn::Error::new(
                    lifetime.span(),
                    format!(
                        "co_local! values must be `'static`; use `'static` instead of `{lifetime}`"
                    ),
                ));
            }
        }
    }
    Lifetimes(push_error).visit_type(ty);
}
