//! The registry of declarations and the block layout computed from it.
//!
//! Every `co_local!` declaration in the final binary places one [`Declaration`]
//! in a `linkme` distributed slice. The first time a block is needed, [`plan`]
//! lays those declarations out once, like a linker lays out `.tdata`/`.tbss`:
//! an offset per value and, for values that need one, a state byte right after
//! the value. `plan` is a pure function over shapes so that it can be tested
//! (and run under Miri) without the linker.

use core::fmt;
use core::marker::PhantomData;

use crate::storage::{ErasedKey, Slot};

/// What the registry knows about one `co_local!` declaration.
///
/// Obtained from [`declarations()`](crate::declarations) or
/// [`LocalKey::declaration`](crate::LocalKey::declaration). Every
/// declaration linked into the binary is listed, from any crate and any
/// module.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
///
/// co_local::co_local! {
///     static COUNTER: Cell<u64> = const { Cell::new(0) };
/// }
///
/// let decl = COUNTER.declaration();
/// assert_eq!(decl.name(), "COUNTER");
/// assert_eq!(decl.size(), 8);
/// assert!(decl.is_const());
/// assert!(co_local::declarations().iter().any(|d| std::ptr::eq(d, decl)));
/// ```
pub struct Declaration {
    pub(crate) name: &'static str,
    pub(crate) module_path: &'static str,
    pub(crate) type_name: fn() -> &'static str,
    pub(crate) size: usize,
    pub(crate) align: usize,
    pub(crate) lazy: bool,
    pub(crate) needs_drop: bool,
    pub(crate) inherits: bool,
    pub(crate) send: bool,
    pub(crate) ops: &'static dyn ErasedKey,
    pub(crate) offset: Slot,
}

impl Declaration {
    /// The name of the static, as written in the declaration.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The module the declaration is in, as `module_path!()` gives it.
    pub fn module_path(&self) -> &'static str {
        self.module_path
    }

    /// The type of the value, as [`core::any::type_name`] gives it.
    pub fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    /// `size_of` the value's type.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `align_of` the value's type.
    pub fn align(&self) -> usize {
        self.align
    }

    /// Whether the initialiser is a `const { }` block (`true`) or an
    /// expression run lazily on first access in each block (`false`).
    pub fn is_const(&self) -> bool {
        !self.lazy
    }

    /// Whether the declaration has `#[inherit]`: a new coroutine, task or
    /// [`Locals::inherit`](crate::Locals::inherit) block starts with a copy
    /// of the value alive in the block current where it is made.
    pub fn inherits(&self) -> bool {
        self.inherits
    }

    /// Whether the value's type has drop glue, so that blocks must destroy it.
    pub fn needs_drop(&self) -> bool {
        self.needs_drop
    }

    /// Whether the value's type is `Send`.
    ///
    /// Only these declarations can be reached from a block that may move
    /// between threads: the block of a [`WithLocals`](crate::WithLocals)
    /// task. There, an access to any other declaration fails
    /// ([`try_with`](crate::LocalKey::try_with) returns
    /// [`AccessError`](crate::AccessError)); threads, coroutines, [`Locals`](crate::Locals)
    /// and [`LocalWithLocals`](crate::LocalWithLocals) reach every declaration.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::cell::{Cell, RefCell};
    /// use std::rc::Rc;
    ///
    /// co_local::co_local! {
    ///     static REQUEST_ID: Cell<u64> = const { Cell::new(0) };
    ///     static CACHE: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
    /// }
    ///
    /// assert!(REQUEST_ID.declaration().is_send());
    /// assert!(!CACHE.declaration().is_send()); // an `Rc` stays on its thread
    /// ```
    pub fn is_send(&self) -> bool {
        self.send
    }

    /// Whether the value carries a state byte in each block (not made /
    /// alive / destroyed): lazy values, and constants whose type has drop
    /// glue (they are put in place on first access, so that only blocks that
    /// reached them destroy them). A constant without drop glue is copied
    /// into every block and needs no state.
    pub(crate) fn has_state(&self) -> bool {
        self.lazy || self.needs_drop
    }

    pub(crate) fn shape(&self) -> Shape {
        Shape {
            size: self.size,
            align: self.align,
            has_state: self.has_state(),
        }
    }
}

impl fmt::Debug for Declaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Declaration")
            .field("name", &self.name)
            .field("module_path", &self.module_path)
            .field("type_name", &self.type_name())
            .field("size", &self.size)
            .field("align", &self.align)
            .field("is_const", &self.is_const())
            .field("inherits", &self.inherits)
            .field("is_send", &self.send)
            .finish_non_exhaustive()
    }
}

/// Not public API. Used by code generated by `co_local!`.
///
/// Proof that `T` is `Send`: only [`SendProbe`]'s inherent `PROOF`, which
/// applies when `T: Send`, makes one.
#[doc(hidden)]
pub struct SendProof<T: ?Sized>(PhantomData<fn() -> *const T>);

/// Not public API. Used by code generated by `co_local!`.
///
/// Tells, in a constant, whether a concrete type is `Send`:
/// `<SendProbe<T>>::PROOF` is `Some` when `T: Send` (the inherent constant,
/// which path resolution prefers when its bound holds) and `None` otherwise
/// (the constant of [`SendFallback`], which must be in scope). It works on
/// types written out in full, as each declaration's type is; in generic code
/// it would always take the fallback.
#[doc(hidden)]
pub struct SendProbe<T: ?Sized>(PhantomData<fn() -> *const T>);

impl<T: ?Sized + Send> SendProbe<T> {
    /// Not public API. `T` is `Send`.
    pub const PROOF: Option<SendProof<T>> = Some(SendProof(PhantomData));
}

/// Not public API. Used by code generated by `co_local!`: the answer of
/// [`SendProbe`] for a type that is not `Send`.
#[doc(hidden)]
pub trait SendFallback<T: ?Sized> {
    /// Not public API. No proof: `T` is not known to be `Send`.
    const PROOF: Option<SendProof<T>> = None;
}

impl<T: ?Sized> SendFallback<T> for SendProbe<T> {}

impl<T: ?Sized> fmt::Debug for SendProof<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendProof")
    }
}

impl<T: ?Sized> fmt::Debug for SendProbe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendProbe")
    }
}

/// The size and alignment of one value, and whether a state byte follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) size: usize,
    pub(crate) align: usize,
    pub(crate) has_state: bool,
}

/// Where each value goes in a block.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Offset of each value, in the order of the input shapes. A value with a
    /// state byte has it at `offset + size`.
    pub(crate) offsets: Vec<usize>,
    /// Bytes of one block, header included.
    pub(crate) size: usize,
    /// Alignment of one block.
    pub(crate) align: usize,
}

/// The panic of a layout that does not fit in the address space: the sum of
/// the declarations' sizes (with padding and state bytes) passes `usize`.
#[cold]
#[track_caller]
pub(crate) fn too_large() -> ! {
    panic!(
        "co_local: the co_local! declarations of this binary do not fit in one block: \
         their sizes add up past the address space"
    )
}

fn add(a: usize, b: usize) -> usize {
    a.checked_add(b).unwrap_or_else(|| too_large())
}

fn align_up(n: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    add(n, align - 1) & !(align - 1)
}

/// Lays out values after a header of `header` (size, align).
///
/// Values are placed in order of decreasing alignment, each with its state
/// byte (if any) right behind it; the padding that alignment leaves behind a
/// state byte is kept as a hole and filled first-fit by later, less aligned
/// values. The result has no overlaps and every offset is aligned. Panics
/// (with [`too_large`]'s message) if the block would not fit in `usize`.
pub(crate) fn plan(header: (usize, usize), shapes: &[Shape]) -> Plan {
    let (header_size, header_align) = header;
    let mut order: Vec<usize> = (0..shapes.len()).collect();
    order.sort_by_key(|&i| (core::cmp::Reverse(shapes[i].align), i));

    let mut offsets = vec![0; shapes.len()];
    let mut end = header_size;
    // Unused byte ranges below `end`, in address order.
    let mut holes: Vec<(usize, usize)> = Vec::new();
    for i in order {
        let Shape {
            size,
            align,
            has_state,
        } = shapes[i];
        let need = add(size, usize::from(has_state));
        let fit = holes.iter().position(|&(start, stop)| {
            // Holes are below `end`, so these sums cannot overflow.
            let at = align_up(start, align);
            at + need <= stop
        });
        let at = match fit {
            Some(h) => {
                let (start, stop) = holes[h];
                let at = align_up(start, align);
                let mut rest = Vec::with_capacity(2);
                if at > start {
                    rest.push((start, at));
                }
                if at + need < stop {
                    rest.push((at + need, stop));
                }
                holes.splice(h..=h, rest);
                at
            }
            None => {
                let at = align_up(end, align);
                if at > end {
                    holes.push((end, at));
                }
                end = add(at, need);
                at
            }
        };
        offsets[i] = at;
    }
    let align = shapes
        .iter()
        .map(|s| s.align)
        .fold(header_align, usize::max);
    Plan {
        offsets,
        size: end,
        align,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(size: usize, align: usize, has_state: bool) -> Shape {
        Shape {
            size,
            align,
            has_state,
        }
    }

    /// Checks the invariants every plan must hold.
    fn check(header: (usize, usize), shapes: &[Shape], plan: &Plan) {
        let mut used: Vec<(usize, usize)> = vec![(0, header.0)];
        for (s, &off) in shapes.iter().zip(&plan.offsets) {
            assert_eq!(off % s.align, 0, "misaligned {s:?} at {off}");
            assert!(off >= header.0, "{s:?} at {off} overlaps the header");
            let need = s.size + usize::from(s.has_state);
            assert!(off + need <= plan.size, "{s:?} at {off} past the end");
            if need > 0 {
                used.push((off, off + need));
            }
        }
        used.sort_unstable();
        for w in used.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {:?} and {:?}", w[0], w[1]);
        }
        let max_align = shapes.iter().map(|s| s.align).fold(header.1, usize::max);
        assert_eq!(plan.align, max_align);
    }

    #[test]
    fn empty_registry_is_just_the_header() {
        let p = plan((16, 8), &[]);
        assert_eq!(p.size, 16);
        assert_eq!(p.align, 8);
    }

    #[test]
    fn state_bytes_follow_values_and_holes_are_filled() {
        let shapes = [
            shape(8, 8, true),
            shape(8, 8, true),
            shape(1, 1, false),
            shape(4, 4, false),
        ];
        let p = plan((16, 8), &shapes);
        check((16, 8), &shapes, &p);
        // The two lazy u64 take 16..25 and 32..41; the u32 and the u8 go into
        // the hole behind the first state byte.
        assert_eq!(p.offsets[0], 16);
        assert_eq!(p.offsets[1], 32);
        assert!(p.offsets[3] > 16 && p.offsets[3] < 32);
        assert!(p.offsets[2] > 16 && p.offsets[2] < 32);
        assert_eq!(p.size, 41);
    }

    #[test]
    fn large_alignments_and_zero_sized_types() {
        let shapes = [
            shape(0, 1, false),
            shape(0, 4096, false),
            shape(0, 1, true),
            shape(4096, 4096, true),
            shape(3, 1, false),
            shape(16, 16, false),
        ];
        let p = plan((16, 8), &shapes);
        check((16, 8), &shapes, &p);
        assert_eq!(p.align, 4096);
    }

    #[test]
    fn many_mixed_shapes_never_overlap() {
        // A deterministic pseudo-random mix of shapes (xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut shapes = Vec::new();
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let align = 1usize << (x % 8);
            let size = align * ((x >> 8) % 4) as usize;
            shapes.push(shape(size, align, (x >> 16) % 2 == 0));
        }
        let p = plan((16, 8), &shapes);
        check((16, 8), &shapes, &p);
        let payload: usize = shapes
            .iter()
            .map(|s| s.size + usize::from(s.has_state))
            .sum();
        // Padding stays small: at most one alignment unit per value.
        let padding: usize = shapes.iter().map(|s| s.align - 1).sum();
        assert!(p.size <= 16 + payload + padding);
    }
}
