//! What happens around a coroutine stack that the context switch itself does
//! not see: a stack overflow into the guard page, and tools (valgrind) that
//! must be told that a region of memory is a stack.
//!
//! Part of the unsafe module of `co_runtime` (`raw`).
//!
//! # Stack overflow
//!
//! A coroutine that overflows its stack touches the guard page below it and
//! the kernel raises `SIGSEGV` (or `SIGBUS`). Like std does for threads,
//! co_runtime then prints what happened before aborting, instead of a bare
//! "Segmentation fault":
//!
//! ```text
//! co_runtime: coroutine stack overflow: fault at 0x7f3a1c3ffff8 in the guard page 0x7f3a1c3ff000..0x7f3a1c400000 of a 262144-byte coroutine stack 0x7f3a1c400000..0x7f3a1c440000
//! co_runtime: aborting
//! ```
//!
//! How it knows: each coroutine's co_local block holds the bounds of its stack
//! in a `co_local!` static ([`STACK_BOUNDS`]), set once when the coroutine is
//! made, so a switch does nothing more for it. The handler, installed once
//! (with `SA_ONSTACK`, on the alternate signal stack std gives its threads),
//! reads the current block's bounds: if the fault address is in that guard
//! page, it reports and aborts; otherwise it hands the signal to the handler
//! that was installed before (std's, which reports thread stack overflows), or
//! restores the default action so the fault kills the process as usual.
//!
//! The read is async-signal-safe: it only loads memory. The handler looks
//! only if the current-block pointer is set (`RawBlock::current()` is not
//! `RawBlock::THREAD`): otherwise the access would make the thread's own
//! block, which allocates. So an overflow inside a
//! `Locals` entered within a coroutine is not recognised (that block has no
//! bounds): it ends as a plain `SIGSEGV`.

use core::cell::Cell;
use std::sync::Once;

/// The bounds of a coroutine's stack: guard page `guard..bottom`, usable
/// `bottom..top`. All zero outside coroutines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StackBounds {
    pub(crate) guard: usize,
    pub(crate) bottom: usize,
    pub(crate) top: usize,
}

co_local::co_local! {
    /// The bounds of the stack of the coroutine that owns the block, for the
    /// stack overflow report. Zero in blocks that are not a coroutine's.
    pub(crate) static STACK_BOUNDS: Cell<StackBounds> = const {
        Cell::new(StackBounds { guard: 0, bottom: 0, top: 0 })
    };
}

/// Installs the overflow handler once per process.
pub(crate) fn install_overflow_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(imp::install);
}

#[cfg(unix)]
mod imp {
    use core::mem::MaybeUninit;
    use core::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};

    use co_local::RawBlock;

    use super::{StackBounds, STACK_BOUNDS};

    /// The actions installed before ours, for `SIGSEGV` and `SIGBUS`.
    static PREVIOUS_SEGV: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());
    static PREVIOUS_BUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

    fn previous(signal: libc::c_int) -> &'static AtomicPtr<libc::sigaction> {
        if signal == libc::SIGBUS {
            &PREVIOUS_BUS
        } else {
            &PREVIOUS_SEGV
        }
    }

    pub(super) fn install() {
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            let mut action = MaybeUninit::<libc::sigaction>::zeroed();
            let mut old = Box::new(MaybeUninit::<libc::sigaction>::zeroed());
            // SAFETY: `action` is a zeroed `sigaction` (a valid empty mask and
            // no flags) that we fill in before use; `sigemptyset` initialises
            // the mask; `sigaction` reads `action` and writes the previous
            // action into `old`, both valid for the call.
            let installed = unsafe {
                let a = action.as_mut_ptr();
                (*a).sa_sigaction = handler as *const () as usize;
                (*a).sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut (*a).sa_mask);
                libc::sigaction(signal, a, old.as_mut_ptr()) == 0
            };
            if installed {
                // SAFETY: `sigaction` succeeded, so it wrote the old action.
                let old = Box::into_raw(old).cast::<libc::sigaction>();
                // Kept for the life of the process: the handler may read it
                // at any time.
                previous(signal).store(old, Ordering::Release);
            }
        }
    }

    extern "C" fn handler(
        signal: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid `siginfo_t` to a `SA_SIGINFO`
        // handler; for SIGSEGV and SIGBUS `si_addr` is the faulting address.
        let fault = unsafe { (*info).si_addr() } as usize;
        if RawBlock::current() != RawBlock::THREAD {
            // A coroutine's (or an entered `Locals`') block is current: the
            // access is its fast path, plain loads (a constant `Cell`, no
            // initialisation, no allocation).
            if let Ok(bounds) = STACK_BOUNDS.try_with(|b| b.get()) {
                if bounds.top != 0 && (bounds.guard..bounds.bottom).contains(&fault) {
                    report_and_abort(fault, bounds);
                }
            }
        }
        let previous = previous(signal).load(Ordering::Acquire);
        // SAFETY: `previous` is null or the leaked action saved by `install`.
        match unsafe { previous.as_ref() } {
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    // SAFETY: with `SA_SIGINFO` the field holds a three-argument
                    // handler, which we call as the kernel would have.
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        unsafe { core::mem::transmute(old.sa_sigaction) };
                    f(signal, info, context);
                } else {
                    // SAFETY: without `SA_SIGINFO` it holds a one-argument one.
                    let f: extern "C" fn(libc::c_int) =
                        unsafe { core::mem::transmute(old.sa_sigaction) };
                    f(signal);
                }
            }
            _ => {
                // Not ours and nobody else's: restore the default action and
                // return, so the faulting access runs again and kills the
                // process with the signal, as without this handler.
                let mut default = MaybeUninit::<libc::sigaction>::zeroed();
                // SAFETY: a zeroed `sigaction` with `SIG_DFL` (0) as handler
                // and an emptied mask is a valid argument.
                unsafe {
                    let d = default.as_mut_ptr();
                    (*d).sa_sigaction = libc::SIG_DFL;
                    libc::sigemptyset(&mut (*d).sa_mask);
                    libc::sigaction(signal, d, ptr::null_mut());
                }
            }
        }
    }

    /// Writes the report to stderr with `write(2)` only (async-signal-safe,
    /// no allocation) and aborts.
    fn report_and_abort(fault: usize, b: StackBounds) -> ! {
        let mut buf = [0u8; 512];
        let mut w = Writer {
            buf: &mut buf,
            len: 0,
        };
        w.str("co_runtime: coroutine stack overflow: fault at ");
        w.hex(fault);
        w.str(" in the guard page ");
        w.hex(b.guard);
        w.str("..");
        w.hex(b.bottom);
        w.str(" of a ");
        w.dec(b.top - b.bottom);
        w.str("-byte coroutine stack ");
        w.hex(b.bottom);
        w.str("..");
        w.hex(b.top);
        w.str("\nco_runtime: aborting\n");
        let len = w.len;
        // SAFETY: `buf[..len]` is initialised; `write` and `abort` are
        // async-signal-safe.
        unsafe {
            libc::write(2, buf.as_ptr().cast(), len);
            libc::abort()
        }
    }

    /// Formats into a fixed buffer, truncating.
    struct Writer<'a> {
        buf: &'a mut [u8],
        len: usize,
    }

    impl Writer<'_> {
        fn byte(&mut self, b: u8) {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        fn str(&mut self, s: &str) {
            s.bytes().for_each(|b| self.byte(b));
        }
        fn hex(&mut self, n: usize) {
            self.str("0x");
            let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
            for i in (0..digits).rev() {
                self.byte(b"0123456789abcdef"[(n >> (4 * i)) & 0xf]);
            }
        }
        fn dec(&mut self, n: usize) {
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            let mut n = n;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            digits[i..].iter().for_each(|&b| self.byte(b));
        }
    }
}

#[cfg(not(unix))]
mod imp {
    /// No handler off Unix: an overflow ends as the platform's access violation.
    pub(super) fn install() {}
}

/// Tells valgrind that `bottom..top` is a stack, so that its memcheck follows
/// the switches onto and off it; returns valgrind's id for the stack. Does
/// nothing (and returns 0) when the program does not run under valgrind.
pub(crate) fn valgrind_stack_register(bottom: usize, top: usize) -> usize {
    valgrind::request(valgrind::STACK_REGISTER, [bottom, top, 0, 0, 0])
}

/// Undoes [`valgrind_stack_register`] before the stack is unmapped.
pub(crate) fn valgrind_stack_deregister(id: usize) {
    valgrind::request(valgrind::STACK_DEREGISTER, [id, 0, 0, 0, 0]);
}

#[cfg(all(target_arch = "x86_64", unix))]
mod valgrind {
    pub(super) const STACK_REGISTER: usize = 0x1501;
    pub(super) const STACK_DEREGISTER: usize = 0x1502;

    /// A valgrind client request: the special no-op instruction sequence
    /// that valgrind's JIT recognises (`valgrind.h`, amd64). On a real CPU the
    /// rotations of `rdi` add up to 128 bits and `xchg rbx, rbx` does nothing,
    /// so the result is the default, 0.
    pub(super) fn request(code: usize, args: [usize; 5]) -> usize {
        let block: [usize; 6] = [code, args[0], args[1], args[2], args[3], args[4]];
        let result: usize;
        // SAFETY: the sequence only rotates `rdi` back to its value (declared
        // clobbered anyway) and exchanges `rbx` with itself; valgrind reads
        // `block` through `rax` and writes the result to `rdx`. `block` lives
        // across the asm.
        unsafe {
            core::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                inout("rdx") 0usize => result,
                in("rax") block.as_ptr(),
                inout("rdi") 0usize => _,
                options(nostack),
            );
        }
        result
    }
}

#[cfg(not(all(target_arch = "x86_64", unix)))]
mod valgrind {
    pub(super) const STACK_REGISTER: usize = 0;
    pub(super) const STACK_DEREGISTER: usize = 0;

    /// Client requests are only wired up on x86_64 Unix.
    pub(super) fn request(_code: usize, _args: [usize; 5]) -> usize {
        0
    }
}
