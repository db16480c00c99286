//! co_local next to generator, whose coroutines switch stacks without
//! telling valgrind: `scripts/valgrind.sh` runs this binary under memcheck
//! for heap errors only (freed or overrun blocks), since memcheck reports
//! generator's own switches; the same scenarios with corosensei are in
//! `soundness_foreign.rs`, which runs under the full check.

use std::cell::{Cell, RefCell};

use co_local::{co_local, Locals};

co_local! {
    static ID: Cell<u32> = const { Cell::new(0) };
}

thread_local! {
    /// Whether `SLOW`'s initialiser should suspend its generator.
    static SUSPEND_IN_INIT: Cell<bool> = const { Cell::new(false) };
    /// Values `SLOW`'s initialiser has made.
    static MADE: Cell<u32> = const { Cell::new(0) };
}

co_local! {
    // generator's free `yield_with` (deprecated in favour of its scope
    // handle, which an initialiser has no way to get) suspends the running
    // generator from inside the initialiser.
    #[allow(deprecated)]
    static SLOW: RefCell<String> = {
        if SUSPEND_IN_INIT.replace(false) {
            generator::yield_with(String::from("suspended"));
        }
        MADE.set(MADE.get() + 1);
        RefCell::new(format!("made {}", MADE.get()))
    };
}

/// Hole 3: a lazy initialiser suspended half-way; meanwhile the value is
/// made and a reference to it is held; the initialiser then returns.
#[test]
#[allow(deprecated)] // `Gn::new`: the generator whose initialiser suspends.
fn a_lazy_initialiser_that_returns_late_never_replaces_a_referenced_value() {
    let mut gen = generator::Gn::<()>::new(|| {
        SUSPEND_IN_INIT.set(true);
        SLOW.with_borrow(|s| s.clone())
    });
    // The generator runs on the thread's own block and suspends inside the
    // initialiser of `SLOW`.
    assert_eq!(gen.resume().as_deref(), Some("suspended"));
    let seen = SLOW.with_borrow(|s| {
        assert_eq!(s, "made 1");
        // The initialiser returns now, finding the value made.
        let from_gen = gen.resume();
        // Memory freed by a replacement would be reused by these.
        let filler: Vec<String> = (0..64).map(|i| format!("filler {i:>12}")).collect();
        drop(filler);
        (s.clone(), from_gen)
    });
    assert_eq!(
        seen.0, "made 1",
        "the value under the reference was replaced"
    );
    assert_eq!(seen.1.as_deref(), Some("made 1"));
    SLOW.with_borrow_mut(|s| s.push('!'));
    assert_eq!(SLOW.with_borrow(Clone::clone), "made 1!");
    assert!(gen.is_done());
}

#[test]
fn generator_tasks_with_resume() {
    let mut gens: Vec<(generator::LocalGenerator<'static, (), u32>, Locals)> = (0..8)
        .map(|i| {
            let gen = generator::Gn::<()>::new_scoped_local(move |mut s| {
                ID.set(i);
                s.yield_with(ID.get());
                ID.set(ID.get() * 10);
                s.yield_with(ID.get());
                generator::done!()
            });
            (gen, Locals::new())
        })
        .collect();
    ID.set(1000);
    for round in 0..2u32 {
        for (i, (gen, locals)) in gens.iter_mut().enumerate() {
            let got = locals.resume(|| gen.resume());
            let i = i as u32;
            assert_eq!(got, Some(if round == 0 { i } else { i * 10 }));
            assert_eq!(ID.get(), 1000);
        }
    }
}
