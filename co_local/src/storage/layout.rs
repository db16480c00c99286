//! The layout of every block, computed once per process from the registry:
//! where each declaration's value (and state byte) is, the image of the
//! constants copied into each new block, where the order of making is kept.
//!
//! Owns the slots written into each declaration ([`Slot`]), the type-erased
//! operations on values ([`ErasedKey`]), [`Layout`] and its one
//! `OnceLock`, and the two `unsafe` constructors that pair a key with its
//! registry entry (called only by co_local's `declare!` helper). Keeps
//! SAFETY.md's I2 (slots are written once, before the layout is published,
//! and read only by threads that obtained it) and I3 (every value, with its
//! state byte, inside the block and aligned, no overlaps).

use core::cell::UnsafeCell;
use core::mem::{align_of, size_of, MaybeUninit};
use core::ptr;
use std::alloc;
use std::sync::OnceLock;

use super::block::Header;
use crate::key::LocalKey;
use crate::registry::{self, Declaration, SendProof, Shape};

/// Where a declaration's value is in every block: its offset, and, for a
/// value with a state byte, its index among them (its link in the lists of
/// what a block made is at that index).
pub struct Slot {
    pub(super) offset: UnsafeCell<usize>,
    pub(super) index: UnsafeCell<usize>,
}

// SAFETY: the slot is written exactly once, in `Layout::build`, which runs
// inside the `OnceLock` initialiser before the layout is published. It is read
// only by threads that have obtained the published layout (an acquire through
// `OnceLock`): `Layout::build` itself, and the access path, which reads it only
// when this thread's `CURRENT` is non-null. `CURRENT` is set only to a block
// made on this thread, which got the layout first, or to a task block
// (`TaskBlock`) that reached this thread by being moved: the move of its owner
// to this thread (by whatever synchronises the hand-over, as `Send` requires)
// happens after the block was made, so after the layout was obtained. So every
// read happens after the write, and there is no other write.
unsafe impl Sync for Slot {}

impl Slot {
    pub(crate) const fn new() -> Slot {
        Slot {
            offset: UnsafeCell::new(0),
            index: UnsafeCell::new(0),
        }
    }

    /// # Safety
    ///
    /// The layout must have been obtained on this thread (see `impl Sync`).
    #[inline(always)]
    pub(super) unsafe fn offset(&self) -> usize {
        // SAFETY: the caller guarantees the write happened before; no write
        // happens after it.
        unsafe { *self.offset.get() }
    }

    /// # Safety
    ///
    /// As for [`Slot::offset`].
    pub(super) unsafe fn index(&self) -> usize {
        // SAFETY: as in `offset`.
        unsafe { *self.index.get() }
    }
}

/// Type-erased operations on a key's value, for the layout and for blocks.
pub(crate) trait ErasedKey: Sync {
    /// Writes the initial value of a constant to `dst` (possibly unaligned).
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of the value's size.
    unsafe fn write_const(&self, dst: *mut u8);

    /// Drops the value at `value` in place.
    ///
    /// # Safety
    ///
    /// `value` must point to an alive, aligned value of the key's type that
    /// nobody uses afterwards.
    unsafe fn drop_value(&self, value: *mut u8);

    /// Writes to `dst` the copy of the value at `src` that a new block
    /// inherits (the declaration's `Clone` or `with` function).
    ///
    /// # Safety
    ///
    /// `src` must point to an alive, aligned value of the key's type that
    /// stays alive during the call; `dst` must be valid for an aligned write
    /// of one, and hold nothing that needs dropping.
    unsafe fn inherit_into(&self, src: *const u8, dst: *mut u8);
}

impl<T: 'static> ErasedKey for LocalKey<T> {
    unsafe fn write_const(&self, dst: *mut u8) {
        // SAFETY: the caller guarantees `dst` is valid for writes of a `T`.
        unsafe { dst.cast::<T>().write_unaligned((self.init)()) }
    }

    unsafe fn drop_value(&self, value: *mut u8) {
        // SAFETY: the caller guarantees an alive, aligned, unused `T`.
        unsafe { ptr::drop_in_place(value.cast::<T>()) }
    }

    unsafe fn inherit_into(&self, src: *const u8, dst: *mut u8) {
        // SAFETY: the caller guarantees an alive `T` at `src` for the call.
        let copy = (self.inherit)(unsafe { &*src.cast::<T>() });
        // SAFETY: the caller guarantees `dst` is valid for the write.
        unsafe { dst.cast::<T>().write(copy) };
    }
}

/// A value with a state byte: where it and its state are, and how to
/// destroy it if it has drop glue.
pub(super) struct Stateful {
    pub(super) value: usize,
    pub(super) state: usize,
    pub(super) drop: Option<&'static dyn ErasedKey>,
}

/// An `#[inherit]` declaration: where its value is, and how to copy it.
pub(super) struct Inherited {
    pub(super) value: usize,
    /// The value's type is `Send`: a task block that may move copies it.
    pub(super) send: bool,
    /// For a value with a state byte: its state byte and index.
    pub(super) stateful: Option<(usize, usize)>,
    pub(super) ops: &'static dyn ErasedKey,
}

/// The layout of every block, computed once per process.
///
/// A block is three regions: the *prefix* `[Header | plain constants]`,
/// copied from [`Layout::prefix`] into every new block (the header written
/// anew), the *clean region* `[values with their state bytes]`, which a new
/// block only needs clean (every state byte `UNINIT`), and the *links*, one
/// `u32` per value with a state byte, read only for values the block made.
/// A fresh allocation is zeroed; a recycled block was cleaned when it was
/// destroyed, touching only what it had made. So making and destroying a
/// block costs the same whatever the number of declarations it did not use.
///
/// The links chain what a block made into two lists whose heads are in the
/// header: the values made and not destroyed yet, newest first (`made`),
/// and those destruction is done with (`dead`). Destruction pops the newest
/// made value, so values die in reverse order of their making, and a value
/// made by a destructor is the next to die.
pub(crate) struct Layout {
    pub(super) size: usize,
    pub(super) align: usize,
    /// The image of the prefix: zeroed header, constants in place.
    pub(super) prefix: Box<[MaybeUninit<u8>]>,
    /// Values with a state byte, by their index (plan order).
    pub(super) stateful: Vec<Stateful>,
    /// Offset of the links: a `u32` per value with a state byte, by index:
    /// the index of the value after it in the list it is in (see above).
    pub(super) links: usize,
    /// The `#[inherit]` declarations, in registry order.
    pub(super) inherited: Vec<Inherited>,
    /// How many clean blocks each thread keeps for reuse.
    pub(super) pool_max: usize,
}

/// Bytes of clean blocks a thread keeps for reuse, at most.
pub(super) const POOL_BYTES: usize = 256 * 1024;

/// Clean blocks a thread keeps for reuse, at most.
pub(super) const POOL_BLOCKS: usize = 64;

/// The end of a list of made values (no index).
pub(super) const NONE: u32 = u32::MAX;

// The SPEC's bound on what a block adds to its values, their state bytes and
// their links.
const _: () = assert!(size_of::<Header>() <= 64);

const _: () = assert!(size_of::<Header>() % align_of::<u64>() == 0);

const _: () = assert!(align_of::<Header>() >= align_of::<u64>());

pub(super) static LAYOUT: OnceLock<Layout> = OnceLock::new();

/// The layout of the registry linked into this binary.
pub(crate) fn layout() -> &'static Layout {
    LAYOUT.get_or_init(|| Layout::build(registry()))
}

/// Every declaration linked into this binary: the distributed slice.
#[cfg(not(test))]
pub(crate) fn registry() -> &'static [Declaration] {
    crate::__private::DECLARATIONS.static_slice()
}

/// The unit tests' registry is a hand-made list, so that they run without
/// the linker's help (and under Miri, which cannot read linkme's sections).
#[cfg(test)]
pub(crate) fn registry() -> &'static [Declaration] {
    &super::tests::DECLARATIONS
}

impl Layout {
    fn build(decls: &'static [Declaration]) -> Layout {
        let (stateful, plain): (Vec<&Declaration>, Vec<&Declaration>) =
            decls.iter().partition(|d| d.has_state());
        let shapes = |ds: &[&Declaration]| ds.iter().map(|d| d.shape()).collect::<Vec<_>>();
        // Indices are `u32`, `NONE` excluded.
        if u32::try_from(stateful.len()).map_or(true, |n| n == NONE) {
            registry::too_large();
        }
        let head = (size_of::<Header>(), align_of::<Header>());
        let prefix_plan = registry::plan(head, &shapes(&plain));
        let stateful_plan = registry::plan((prefix_plan.size, 1), &shapes(&stateful));
        let links = registry::plan(
            (stateful_plan.size, 1),
            &[Shape {
                size: stateful
                    .len()
                    .checked_mul(size_of::<u32>())
                    .unwrap_or_else(|| registry::too_large()),
                align: align_of::<u32>(),
                has_state: false,
            }],
        );
        let size = links.size;
        let align = prefix_plan
            .align
            .max(stateful_plan.align)
            .max(align_of::<Header>());
        let links = links.offsets[0];
        if alloc::Layout::from_size_align(size, align).is_err() {
            registry::too_large();
        }

        let mut prefix = vec![MaybeUninit::new(0u8); prefix_plan.size].into_boxed_slice();
        let mut inherited = Vec::new();
        for (decl, &value) in plain.iter().zip(&prefix_plan.offsets) {
            if decl.inherits() {
                inherited.push(Inherited {
                    value,
                    send: decl.is_send(),
                    stateful: None,
                    ops: decl.ops,
                });
            }
            // SAFETY: we are inside the `OnceLock` initialiser, before the
            // layout is published: no thread reads any slot yet (see `Slot`).
            unsafe { *decl.offset.offset.get() = value };
            // SAFETY: `plan` keeps `value + size` within the prefix.
            unsafe { decl.ops.write_const(prefix.as_mut_ptr().add(value).cast()) };
        }
        let mut entries = Vec::with_capacity(stateful.len());
        for (index, (decl, &value)) in stateful.iter().zip(&stateful_plan.offsets).enumerate() {
            // SAFETY: as above.
            unsafe {
                *decl.offset.offset.get() = value;
                *decl.offset.index.get() = index;
            }
            entries.push(Stateful {
                value,
                state: value + decl.size(),
                drop: decl.needs_drop().then_some(decl.ops),
            });
            if decl.inherits() {
                inherited.push(Inherited {
                    value,
                    send: decl.is_send(),
                    stateful: Some((value + decl.size(), index)),
                    ops: decl.ops,
                });
            }
        }
        Layout {
            size,
            align,
            prefix,
            stateful: entries,
            links,
            inherited,
            pool_max: (POOL_BYTES / size).clamp(1, POOL_BLOCKS),
        }
    }

    /// Bytes of one block.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(super) fn alloc_layout(&self) -> alloc::Layout {
        alloc::Layout::from_size_align(self.size, self.align)
            .unwrap_or_else(|_| registry::too_large())
    }
}

// The two constructors that pair a key with its registry entry. They are
// `unsafe` because only a pair made together, of one type, with the entry in
// co_local's registry, is laid out: co_local's `declare!` helper
// (`__private.rs`) is their one caller and keeps that by construction.
impl Declaration {
    /// Not public API. Used by code generated by `co_local!`.
    ///
    /// # Safety
    ///
    /// `key` must be the key made with this declaration
    /// ([`LocalKey::private_new`]), and this declaration must be a static
    /// placed in the registry's distributed slice: only those get an offset.
    /// `send` is [`SendProbe`]'s `PROOF` for `T`: only a `T` that is `Send`
    /// has one.
    #[doc(hidden)]
    pub const unsafe fn private_new<T: 'static>(
        key: &'static LocalKey<T>,
        name: &'static str,
        module_path: &'static str,
        lazy: bool,
        inherits: bool,
        send: Option<SendProof<T>>,
    ) -> Declaration {
        Declaration {
            send: send.is_some(),
            name,
            module_path,
            type_name: core::any::type_name::<T>,
            size: core::mem::size_of::<T>(),
            align: core::mem::align_of::<T>(),
            lazy,
            needs_drop: core::mem::needs_drop::<T>(),
            inherits,
            ops: key,
            offset: Slot::new(),
        }
    }
}

impl<T: 'static> LocalKey<T> {
    /// Not public API. Used by code generated by `co_local!`.
    ///
    /// # Safety
    ///
    /// `decl` must be the declaration made for this key
    /// ([`Declaration::private_new`] with this key and the same `T`), placed
    /// in the registry's distributed slice, and `lazy` must be the value
    /// given there. `send` is [`SendProbe`](crate::__private::SendProbe)'s
    /// `PROOF` for `T`, as given there.
    #[doc(hidden)]
    pub const unsafe fn private_new(
        decl: &'static Declaration,
        init: fn() -> T,
        lazy: bool,
        inherit: fn(&T) -> T,
        send: Option<SendProof<T>>,
    ) -> Self {
        LocalKey {
            decl,
            init,
            lazy,
            inherit,
            send: send.is_some(),
        }
    }
}
