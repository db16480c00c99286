//! A randomised model test of co_local and co_runtime together.
//!
//! proptest generates scripts of operations on many coroutines: create one
//! (with a script of accesses captured at creation), seed it with
//! `with_locals`, resume it with a step, drop it (suspended, never started
//! or finished), and access the thread's own copies. A coroutine's body is an
//! interpreter of the steps it receives through its resume inputs: read and
//! write keys (const and lazy, `Cell` and `RefCell`, values whose destructor
//! is counted), resume, seed or drop *another* coroutine from inside it, enter
//! a separate `co_local::Locals` and suspend inside it, hold a reference from
//! `with` across suspensions, return, panic.
//!
//! Every script runs on a fresh thread next to a plain model: a map of values
//! per block (each coroutine's, each entered `Locals`'s and the thread's
//! own). Every observation (each value read, each way a resume ends) and
//! every destruction (which value, with which block current) is checked
//! against the model after each operation; the thread's own values are
//! checked when the thread has exited. A failure shrinks to a minimal script.
//!
//! Each run executes over a million operations, counted as they are
//! performed (see `Tally`); the counts are printed at the end (visible with
//! `--nocapture`). `PROPTEST_CASES` runs more or fewer cases and
//! `PROPTEST_RNG_SEED` replays a run.

use std::cell::{Cell, RefCell};
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex, Once};

use co_local::{co_local, LocalKey, Locals};
use co_runtime::{Coroutine, CoroutineResult, Yielder};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRunner};

// ---------------------------------------------------------------------------
// The system under test: five keys, and a value that logs its destruction.

/// The destructions seen by one script's thread: `(tag, block current)`.
type DropLog = Arc<Mutex<Vec<(u64, u64)>>>;

std::thread_local! {
    /// The next tag a [`Counted`] or a lazy initialiser takes on this thread.
    static NEXT_TAG: Cell<u64> = const { Cell::new(1) };
    /// The next id of a block (a coroutine's or an entered `Locals`'s); the
    /// thread's own block is 1.
    static NEXT_BLOCK: Cell<u64> = const { Cell::new(2) };
    /// Where this thread's [`Counted`] values log their destruction. Each
    /// value holds its own handle, so the log outlives the thread's block.
    static LOG: DropLog = Arc::default();
}

fn fresh_tag() -> u64 {
    NEXT_TAG.replace(NEXT_TAG.get() + 1)
}

fn fresh_block() -> u64 {
    NEXT_BLOCK.replace(NEXT_BLOCK.get() + 1)
}

/// A value with a destructor that logs its tag and the block current when it
/// is dropped.
#[derive(Debug)]
struct Counted {
    tag: u64,
    log: DropLog,
}

impl Counted {
    fn new() -> Counted {
        Counted {
            tag: fresh_tag(),
            log: LOG.with(Arc::clone),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let block = BLOCK_ID.get();
        self.log.lock().unwrap().push((self.tag, block));
    }
}

co_local! {
    /// The id of the block: a constant without destructor, so it stays
    /// readable while a block is destroyed.
    static BLOCK_ID: Cell<u64> = const { Cell::new(0) };
    static C_CELL: Cell<u64> = const { Cell::new(0) };
    static L_CELL: Cell<u64> = Cell::new(fresh_tag());
    static C_DROP: RefCell<Option<Counted>> = const { RefCell::new(None) };
    static L_DROP: RefCell<Option<Counted>> = RefCell::new(Some(Counted::new()));
    static L_VEC: RefCell<Vec<u64>> = RefCell::new(vec![fresh_tag()]);
}

// ---------------------------------------------------------------------------
// Scripts.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ConstCell,
    LazyCell,
    ConstDrop,
    LazyDrop,
    LazyVec,
}

const KEYS: usize = 5;

impl Key {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy)]
enum AccessKind {
    /// `get` / `with_borrow`.
    Get,
    /// `try_with`.
    TryGet,
    /// `set` (a new `Counted`, or `vec![v]`): skips a lazy initialiser.
    Set,
    /// `take`.
    Take,
    /// `replace`.
    Replace,
    /// `X.set(X.get() + v)`; toggle a `Counted` in `with_borrow_mut`; push.
    Modify,
}

#[derive(Debug, Clone, Copy)]
struct Access {
    kind: AccessKind,
    key: Key,
    value: u64,
}

/// What a coroutine does when resumed with it.
#[derive(Debug, Clone)]
enum Step {
    Access(Access),
    /// Make a `Locals`, enter it and suspend inside it, until `Leave`.
    Enter,
    /// Call `with` on a key and suspend inside the closure, until `Leave`;
    /// then read the value through the reference held all along.
    Hold(Key),
    /// Leave the innermost `Enter` (dropping its `Locals`) or `Hold`.
    Leave,
    Return,
    Panic,
    /// Act on another coroutine from inside this one.
    Nested(Index, Nested),
}

#[derive(Debug, Clone)]
enum Nested {
    Resume(Box<Step>),
    Seed(Access),
    Drop,
}

/// What the driver (the thread, outside every coroutine) does.
#[derive(Debug, Clone)]
enum Op {
    /// Make a coroutine that runs `prelude` on its first resume.
    Create {
        prelude: Vec<Access>,
    },
    Seed(Index, Access),
    Resume(Index, Step),
    Drop(Index),
    /// An access to the thread's own block.
    Thread(Access),
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        Just(Key::ConstCell),
        Just(Key::LazyCell),
        Just(Key::ConstDrop),
        Just(Key::LazyDrop),
        Just(Key::LazyVec),
    ]
}

fn access() -> impl Strategy<Value = Access> {
    let kind = prop_oneof![
        3 => Just(AccessKind::Get),
        1 => Just(AccessKind::TryGet),
        2 => Just(AccessKind::Set),
        1 => Just(AccessKind::Take),
        1 => Just(AccessKind::Replace),
        2 => Just(AccessKind::Modify),
    ];
    (kind, key(), 0..100u64).prop_map(|(kind, key, value)| Access { kind, key, value })
}

/// The weights of the operations and steps a script is made of.
#[derive(Debug, Clone, Copy)]
struct Mix {
    create: u32,
    seed: u32,
    resume: u32,
    drop: u32,
    thread: u32,
    access: u32,
    enter: u32,
    hold: u32,
    leave: u32,
    ret: u32,
    panic: u32,
    nested: u32,
}

/// Steps, nested up to three deep (a nested resume of a coroutine that
/// resumes another...). Built once: `prop_recursive` would rebuild its
/// strategies for every value, which dominates the run time in debug builds.
fn step(mix: Mix) -> BoxedStrategy<Step> {
    let leaf = prop_oneof![
        mix.access => access().prop_map(Step::Access),
        mix.enter => Just(Step::Enter),
        mix.hold => key().prop_map(Step::Hold),
        mix.leave => Just(Step::Leave),
        mix.ret => Just(Step::Return),
        mix.panic => Just(Step::Panic),
    ]
    .boxed();
    let leaves = mix.access + mix.enter + mix.hold + mix.leave + mix.ret + mix.panic;
    let mut step = leaf.clone();
    for _ in 0..3 {
        let nested = prop_oneof![
            3 => step.prop_map(|s| Nested::Resume(Box::new(s))),
            1 => access().prop_map(Nested::Seed),
            1 => Just(Nested::Drop),
        ];
        step = prop_oneof![
            leaves => leaf.clone(),
            mix.nested => (any::<Index>(), nested).prop_map(|(i, n)| Step::Nested(i, n)),
        ]
        .boxed();
    }
    step
}

fn op(mix: Mix) -> impl Strategy<Value = Op> {
    prop_oneof![
        mix.create => prop::collection::vec(access(), 0..3).prop_map(|prelude| Op::Create { prelude }),
        mix.seed => (any::<Index>(), access()).prop_map(|(i, a)| Op::Seed(i, a)),
        mix.resume => (any::<Index>(), step(mix)).prop_map(|(i, s)| Op::Resume(i, s)),
        mix.drop => any::<Index>().prop_map(Op::Drop),
        mix.thread => access().prop_map(Op::Thread),
    ]
}

/// The `k`-th present entry of a table of coroutines (real or model):
/// dropped ones, and those running now, are absent.
fn resolve<T>(table: &[Option<T>], index: Index) -> Option<usize> {
    let present: Vec<usize> = (0..table.len()).filter(|&i| table[i].is_some()).collect();
    (!present.is_empty()).then(|| present[index.index(present.len())])
}

// ---------------------------------------------------------------------------
// What is observed, by the real system and by the model alike.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Obs {
    Unit,
    Num(u64),
    Opt(Option<u64>),
    Vec(Vec<u64>),
    AccessErr,
    Entered(u64),
    Left,
    Held(Box<Obs>),
    NoFrame,
    Unavailable,
    Nested(Vec<Obs>),
    Seeded(Option<Box<Obs>>),
    Dropped,
    /// How a resume ended.
    Yielded,
    Returned,
    /// The coroutine panicked; what it had observed in that resume.
    Panicked(Vec<Obs>),
    /// Resuming a finished coroutine panicked.
    Finished,
    /// Anything else: a panic nobody expects.
    Other(String),
}

/// The payload of a `Step::Panic`.
struct ModelPanic(Vec<Obs>);

const FINISHED_MESSAGE: &str = "cannot resume a coroutine that has finished";

/// Operations performed by the real system, counted as they are performed:
/// each access (whichever accessor, wherever), creation, `with_locals`,
/// resume (from the thread or from a coroutine), drop, and each step that is
/// not an access (enter and leave a `Locals`, hold a `with`, return, panic).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ops: u64,
    accesses: u64,
    resumes: u64,
    forced_unwinds: u64,
    never_started_drops: u64,
    panics: u64,
    locals_entered: u64,
    scripts: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.ops += other.ops;
        self.accesses += other.accesses;
        self.resumes += other.resumes;
        self.forced_unwinds += other.forced_unwinds;
        self.never_started_drops += other.never_started_drops;
        self.panics += other.panics;
        self.locals_entered += other.locals_entered;
        self.scripts += other.scripts;
    }
}

std::thread_local! {
    /// What this script's thread has performed.
    static TALLY: RefCell<Tally> = RefCell::default();
}

/// Counts one operation, of the kind `field` names if any.
fn count(field: fn(&mut Tally) -> Option<&mut u64>) {
    TALLY.with_borrow_mut(|t| {
        t.ops += 1;
        if let Some(n) = field(t) {
            *n += 1;
        }
    });
}

// ---------------------------------------------------------------------------
// The real side.

type Co = Coroutine<Step, Vec<Obs>, Vec<Obs>>;
type Table = Rc<RefCell<Vec<Option<Co>>>>;

fn see_cell(cell: &Cell<u64>) -> Obs {
    Obs::Num(cell.get())
}

fn see_drop(cell: &RefCell<Option<Counted>>) -> Obs {
    Obs::Opt(cell.borrow().as_ref().map(|c| c.tag))
}

fn see_vec(cell: &RefCell<Vec<u64>>) -> Obs {
    Obs::Vec(cell.borrow().clone())
}

fn cell_access(key: &'static LocalKey<Cell<u64>>, kind: AccessKind, value: u64) -> Obs {
    match kind {
        AccessKind::Get => Obs::Num(key.get()),
        AccessKind::TryGet => key.try_with(see_cell).unwrap_or(Obs::AccessErr),
        AccessKind::Set => {
            key.set(value);
            Obs::Unit
        }
        AccessKind::Take => Obs::Num(key.take()),
        AccessKind::Replace => Obs::Num(key.replace(value)),
        AccessKind::Modify => {
            key.set(key.get().wrapping_add(value));
            Obs::Unit
        }
    }
}

fn drop_access(key: &'static LocalKey<RefCell<Option<Counted>>>, kind: AccessKind) -> Obs {
    match kind {
        AccessKind::Get => key.with_borrow(|c| Obs::Opt(c.as_ref().map(|c| c.tag))),
        AccessKind::TryGet => key.try_with(see_drop).unwrap_or(Obs::AccessErr),
        AccessKind::Set => {
            key.set(Some(Counted::new()));
            Obs::Unit
        }
        AccessKind::Take => Obs::Opt(key.take().map(|c| c.tag)),
        AccessKind::Replace => Obs::Opt(key.replace(Some(Counted::new())).map(|c| c.tag)),
        AccessKind::Modify => {
            key.with_borrow_mut(|c| match c.take() {
                Some(old) => drop(old),
                None => *c = Some(Counted::new()),
            });
            Obs::Unit
        }
    }
}

fn vec_access(key: &'static LocalKey<RefCell<Vec<u64>>>, kind: AccessKind, value: u64) -> Obs {
    match kind {
        AccessKind::Get => key.with_borrow(|v| Obs::Vec(v.clone())),
        AccessKind::TryGet => key.try_with(see_vec).unwrap_or(Obs::AccessErr),
        AccessKind::Set => {
            key.set(vec![value]);
            Obs::Unit
        }
        AccessKind::Take => Obs::Vec(key.take()),
        AccessKind::Replace => Obs::Vec(key.replace(vec![value])),
        AccessKind::Modify => {
            key.with_borrow_mut(|v| v.push(value));
            Obs::Unit
        }
    }
}

/// Performs `a` on the current block.
fn real_access(a: &Access) -> Obs {
    count(|t| Some(&mut t.accesses));
    match a.key {
        Key::ConstCell => cell_access(&C_CELL, a.kind, a.value),
        Key::LazyCell => cell_access(&L_CELL, a.kind, a.value),
        Key::ConstDrop => drop_access(&C_DROP, a.kind),
        Key::LazyDrop => drop_access(&L_DROP, a.kind),
        Key::LazyVec => vec_access(&L_VEC, a.kind, a.value),
    }
}

/// Calls `key.with` and runs `inner` inside the closure; if `inner` ends
/// with `Leave`, reads the value through the reference held all along.
fn hold<T>(key: &'static LocalKey<T>, see: fn(&T) -> Obs, inner: impl FnOnce() -> Exit) -> Exit {
    key.with(|value| match inner() {
        Exit::Leave(mut obs) => {
            obs.push(Obs::Held(Box::new(see(value))));
            Exit::Leave(obs)
        }
        Exit::Return(obs) => Exit::Return(obs),
    })
}

/// How a level of the interpreter ended, with what was observed since the
/// last suspension.
enum Exit {
    Leave(Vec<Obs>),
    Return(Vec<Obs>),
}

/// Resumes `co` with `step`: what it observed, then how the resume ended.
fn real_resume(co: &mut Co, step: Step) -> Vec<Obs> {
    count(|t| Some(&mut t.resumes));
    match panic::catch_unwind(AssertUnwindSafe(|| co.resume(step))) {
        Ok(CoroutineResult::Yield(mut obs)) => {
            obs.push(Obs::Yielded);
            obs
        }
        Ok(CoroutineResult::Return(mut obs)) => {
            obs.push(Obs::Returned);
            obs
        }
        Err(payload) => match payload.downcast::<ModelPanic>() {
            Ok(panic) => vec![Obs::Panicked(panic.0)],
            Err(payload) => vec![match panic_message(&*payload) {
                Some(FINISHED_MESSAGE) => Obs::Finished,
                Some(other) => Obs::Other(other.to_owned()),
                None => Obs::Other(String::from("<unknown payload>")),
            }],
        },
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

fn real_drop(co: Co) {
    if !co.started() {
        count(|t| Some(&mut t.never_started_drops));
    } else if !co.done() {
        count(|t| Some(&mut t.forced_unwinds));
    } else {
        count(|_| None);
    }
    drop(co);
}

fn real_seed(co: &mut Co, a: &Access) -> Obs {
    count(|_| None);
    Obs::Seeded(co.with_locals(|| real_access(a)).map(Box::new))
}

/// Acts on another coroutine of `table`, from inside a coroutine.
fn real_nested(table: &Table, index: Index, nested: Nested) -> Obs {
    let slot = resolve(&table.borrow(), index);
    let Some(slot) = slot else {
        return Obs::Unavailable;
    };
    let mut co = table.borrow_mut()[slot].take().unwrap();
    let obs = match nested {
        Nested::Resume(step) => Obs::Nested(real_resume(&mut co, *step)),
        Nested::Seed(a) => real_seed(&mut co, &a),
        Nested::Drop => {
            real_drop(co);
            return Obs::Dropped;
        }
    };
    table.borrow_mut()[slot] = Some(co);
    obs
}

/// One level of a coroutine's interpreter: runs `first`, if any, then each
/// step its resumes bring, until a `Leave` (not at the outermost level) or a
/// `Return`. `obs` is what was observed since the last suspension.
fn interpret(
    y: &Yielder<Step, Vec<Obs>>,
    table: &Table,
    outermost: bool,
    mut first: Option<Step>,
    mut obs: Vec<Obs>,
) -> Exit {
    loop {
        let step = match first.take() {
            Some(step) => step,
            None => y.suspend(mem::take(&mut obs)),
        };
        if !matches!(step, Step::Access(_) | Step::Nested(..)) {
            count(|_| None);
        }
        match step {
            Step::Access(a) => obs.push(real_access(&a)),
            Step::Enter => {
                TALLY.with_borrow_mut(|t| t.locals_entered += 1);
                let id = fresh_block();
                let mut locals = Locals::new();
                locals.enter(|| BLOCK_ID.set(id));
                obs.push(Obs::Entered(id));
                let exit = locals.enter(|| interpret(y, table, false, None, mem::take(&mut obs)));
                drop(locals);
                match exit {
                    Exit::Leave(inner) => {
                        obs = inner;
                        obs.push(Obs::Left);
                    }
                    Exit::Return(inner) => return Exit::Return(inner),
                }
            }
            Step::Hold(key) => {
                obs.push(Obs::Unit);
                let inner = |obs: Vec<Obs>| move || interpret(y, table, false, None, obs);
                let obs_now = mem::take(&mut obs);
                let exit = match key {
                    Key::ConstCell => hold(&C_CELL, see_cell, inner(obs_now)),
                    Key::LazyCell => hold(&L_CELL, see_cell, inner(obs_now)),
                    Key::ConstDrop => hold(&C_DROP, see_drop, inner(obs_now)),
                    Key::LazyDrop => hold(&L_DROP, see_drop, inner(obs_now)),
                    Key::LazyVec => hold(&L_VEC, see_vec, inner(obs_now)),
                };
                match exit {
                    Exit::Leave(inner) => obs = inner,
                    Exit::Return(inner) => return Exit::Return(inner),
                }
            }
            Step::Leave if outermost => obs.push(Obs::NoFrame),
            Step::Leave => return Exit::Leave(obs),
            Step::Return => return Exit::Return(obs),
            Step::Panic => {
                TALLY.with_borrow_mut(|t| t.panics += 1);
                panic::panic_any(ModelPanic(obs));
            }
            Step::Nested(index, nested) => obs.push(real_nested(table, index, nested)),
        }
    }
}

/// Keeps the panic hook quiet about the panics the scripts expect.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            if payload.is::<ModelPanic>() || panic_message(payload) == Some(FINISHED_MESSAGE) {
                return;
            }
            default(info);
        }));
    });
}

// ---------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Num(u64),
    Opt(Option<u64>),
    Vec(Vec<u64>),
}

impl Val {
    fn obs(&self) -> Obs {
        match self {
            Val::Num(n) => Obs::Num(*n),
            Val::Opt(o) => Obs::Opt(*o),
            Val::Vec(v) => Obs::Vec(v.clone()),
        }
    }
}

struct MBlock {
    id: u64,
    /// `None`: a lazy value not made.
    vals: [Option<Val>; KEYS],
}

impl MBlock {
    fn new(id: u64) -> MBlock {
        MBlock {
            id,
            vals: [Some(Val::Num(0)), None, Some(Val::Opt(None)), None, None],
        }
    }
}

enum MFrame {
    Locals(MBlock),
    Hold(Key),
}

enum MStatus {
    NotStarted(Vec<Access>),
    Suspended,
    Done,
}

struct MCo {
    status: MStatus,
    own: MBlock,
    frames: Vec<MFrame>,
}

impl MCo {
    fn current(&mut self) -> &mut MBlock {
        let own = &mut self.own;
        self.frames
            .iter_mut()
            .rev()
            .find_map(|f| match f {
                MFrame::Locals(b) => Some(b),
                MFrame::Hold(_) => None,
            })
            .unwrap_or(own)
    }
}

struct Model {
    next_tag: u64,
    next_block: u64,
    thread: MBlock,
    table: Vec<Option<MCo>>,
    /// Destructions expected since the last check.
    drops: Vec<(u64, u64)>,
}

enum End {
    Yielded,
    Returned,
    Panicked,
}

impl Model {
    fn new() -> Model {
        Model {
            next_tag: 1,
            next_block: 2,
            thread: MBlock::new(1),
            table: Vec::new(),
            drops: Vec::new(),
        }
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag - 1
    }

    /// Makes a lazy value, as an access other than `set` does.
    fn make(&mut self, b: &mut MBlock, key: Key) {
        if b.vals[key.index()].is_none() {
            let tag = self.tag();
            b.vals[key.index()] = Some(match key {
                Key::LazyCell => Val::Num(tag),
                Key::LazyDrop => Val::Opt(Some(tag)),
                Key::LazyVec => Val::Vec(vec![tag]),
                Key::ConstCell | Key::ConstDrop => unreachable!("constants are made"),
            });
        }
    }

    fn destroy(&mut self, b: MBlock) {
        for val in b.vals.into_iter().flatten() {
            if let Val::Opt(Some(tag)) = val {
                self.drops.push((tag, b.id));
            }
        }
    }

    fn access(&mut self, b: &mut MBlock, a: &Access) -> Obs {
        let k = a.key.index();
        match (a.key, a.kind) {
            (_, AccessKind::Get | AccessKind::TryGet) => {
                self.make(b, a.key);
                b.vals[k].as_ref().unwrap().obs()
            }
            (Key::ConstCell | Key::LazyCell, AccessKind::Set) => {
                b.vals[k] = Some(Val::Num(a.value));
                Obs::Unit
            }
            (Key::ConstDrop | Key::LazyDrop, AccessKind::Set) => {
                let tag = self.tag();
                if let Some(Val::Opt(Some(old))) = b.vals[k].replace(Val::Opt(Some(tag))) {
                    self.drops.push((old, b.id));
                }
                Obs::Unit
            }
            (Key::LazyVec, AccessKind::Set) => {
                b.vals[k] = Some(Val::Vec(vec![a.value]));
                Obs::Unit
            }
            (_, AccessKind::Take) => {
                self.make(b, a.key);
                let empty = match a.key {
                    Key::ConstCell | Key::LazyCell => Val::Num(0),
                    Key::ConstDrop | Key::LazyDrop => Val::Opt(None),
                    Key::LazyVec => Val::Vec(Vec::new()),
                };
                let old = b.vals[k].replace(empty).unwrap();
                if let Val::Opt(Some(tag)) = old {
                    self.drops.push((tag, b.id));
                }
                old.obs()
            }
            (_, AccessKind::Replace) => {
                let new = match a.key {
                    Key::ConstCell | Key::LazyCell => Val::Num(a.value),
                    // The argument is made before the access (and its
                    // initialiser, if it runs).
                    Key::ConstDrop | Key::LazyDrop => Val::Opt(Some(self.tag())),
                    Key::LazyVec => Val::Vec(vec![a.value]),
                };
                self.make(b, a.key);
                let old = b.vals[k].replace(new).unwrap();
                if let Val::Opt(Some(tag)) = old {
                    self.drops.push((tag, b.id));
                }
                old.obs()
            }
            (_, AccessKind::Modify) => {
                self.make(b, a.key);
                let new = match b.vals[k].take().unwrap() {
                    Val::Num(n) => Val::Num(n.wrapping_add(a.value)),
                    Val::Opt(Some(tag)) => {
                        self.drops.push((tag, b.id));
                        Val::Opt(None)
                    }
                    Val::Opt(None) => Val::Opt(Some(self.tag())),
                    Val::Vec(mut v) => {
                        v.push(a.value);
                        Val::Vec(v)
                    }
                };
                b.vals[k] = Some(new);
                Obs::Unit
            }
        }
    }

    fn access_in(&mut self, co: &mut MCo, a: &Access) -> Obs {
        let mut b = mem::replace(co.current(), MBlock::new(0));
        let obs = self.access(&mut b, a);
        *co.current() = b;
        obs
    }

    fn access_own(&mut self, co: &mut MCo, a: &Access) -> Obs {
        let mut b = mem::replace(&mut co.own, MBlock::new(0));
        let obs = self.access(&mut b, a);
        co.own = b;
        obs
    }

    /// Ends a coroutine: its frames unwind innermost first, then its own
    /// block is destroyed.
    fn finish(&mut self, co: &mut MCo) {
        while let Some(frame) = co.frames.pop() {
            if let MFrame::Locals(b) = frame {
                self.destroy(b);
            }
        }
        co.status = MStatus::Done;
        let own = mem::replace(&mut co.own, MBlock::new(0));
        self.destroy(own);
    }

    fn resume(&mut self, co: &mut MCo, step: &Step) -> Vec<Obs> {
        let mut obs = Vec::new();
        match mem::replace(&mut co.status, MStatus::Suspended) {
            MStatus::Done => {
                co.status = MStatus::Done;
                return vec![Obs::Finished];
            }
            MStatus::NotStarted(prelude) => {
                for a in &prelude {
                    let o = self.access_own(co, a);
                    obs.push(o);
                }
            }
            MStatus::Suspended => {}
        }
        match self.step(co, step, &mut obs) {
            End::Yielded => obs.push(Obs::Yielded),
            End::Returned => {
                self.finish(co);
                obs.push(Obs::Returned);
            }
            End::Panicked => {
                self.finish(co);
                obs = vec![Obs::Panicked(obs)];
            }
        }
        obs
    }

    fn step(&mut self, co: &mut MCo, step: &Step, obs: &mut Vec<Obs>) -> End {
        match step {
            Step::Access(a) => {
                let o = self.access_in(co, a);
                obs.push(o);
            }
            Step::Enter => {
                let id = self.next_block;
                self.next_block += 1;
                co.frames.push(MFrame::Locals(MBlock::new(id)));
                obs.push(Obs::Entered(id));
            }
            Step::Hold(key) => {
                // `with` makes a lazy value first.
                let mut b = mem::replace(co.current(), MBlock::new(0));
                self.make(&mut b, *key);
                *co.current() = b;
                co.frames.push(MFrame::Hold(*key));
                obs.push(Obs::Unit);
            }
            Step::Leave => match co.frames.pop() {
                None => obs.push(Obs::NoFrame),
                Some(MFrame::Locals(b)) => {
                    self.destroy(b);
                    obs.push(Obs::Left);
                }
                Some(MFrame::Hold(key)) => {
                    let held = co.current().vals[key.index()].as_ref().unwrap().obs();
                    obs.push(Obs::Held(Box::new(held)));
                }
            },
            Step::Return => return End::Returned,
            Step::Panic => return End::Panicked,
            Step::Nested(index, nested) => {
                let o = self.nested(*index, nested);
                obs.push(o);
            }
        }
        End::Yielded
    }

    fn nested(&mut self, index: Index, nested: &Nested) -> Obs {
        let Some(slot) = resolve(&self.table, index) else {
            return Obs::Unavailable;
        };
        let mut co = self.table[slot].take().unwrap();
        let obs = match nested {
            Nested::Resume(step) => Obs::Nested(self.resume(&mut co, step)),
            Nested::Seed(a) => self.seed(&mut co, a),
            Nested::Drop => {
                self.drop_co(co);
                return Obs::Dropped;
            }
        };
        self.table[slot] = Some(co);
        obs
    }

    fn seed(&mut self, co: &mut MCo, a: &Access) -> Obs {
        match co.status {
            MStatus::Done => Obs::Seeded(None),
            _ => Obs::Seeded(Some(Box::new(self.access_own(co, a)))),
        }
    }

    fn drop_co(&mut self, mut co: MCo) {
        if !matches!(co.status, MStatus::Done) {
            self.finish(&mut co);
        }
    }
}

// ---------------------------------------------------------------------------
// Running a script.

fn mismatch(
    what: &str,
    at: usize,
    op: &Op,
    expected: &dyn std::fmt::Debug,
    got: &dyn std::fmt::Debug,
) -> String {
    format!("{what} differ at op #{at} {op:?}:\n  model: {expected:?}\n  real:  {got:?}")
}

fn take_sorted(log: &DropLog) -> Vec<(u64, u64)> {
    let mut drops = mem::take(&mut *log.lock().unwrap());
    drops.sort_unstable();
    drops
}

/// Runs `ops` on this thread (a fresh one) and checks each step against the
/// model. Returns the model, whose thread block is checked after the thread
/// exits, and the log.
fn run_script(ops: &[Op]) -> Result<(Model, DropLog), String> {
    let log = LOG.with(Arc::clone);
    let mut model = Model::new();
    BLOCK_ID.set(1);
    let table: Table = Rc::default();
    for (at, op) in ops.iter().enumerate() {
        let (expected, got) = match op {
            Op::Create { prelude } => {
                let id = model.next_block;
                model.next_block += 1;
                model.table.push(Some(MCo {
                    status: MStatus::NotStarted(prelude.clone()),
                    own: MBlock::new(id),
                    frames: Vec::new(),
                }));

                count(|_| None);
                let id = fresh_block();
                let prelude = prelude.clone();
                let shared = table.clone();
                let mut co = Co::new(move |y, first| {
                    let obs = prelude.iter().map(real_access).collect();
                    match interpret(y, &shared, true, Some(first), obs) {
                        Exit::Leave(_) => unreachable!("the outermost level does not leave"),
                        Exit::Return(obs) => obs,
                    }
                });
                co.with_locals(|| BLOCK_ID.set(id));
                table.borrow_mut().push(Some(co));
                (vec![], vec![])
            }
            Op::Seed(index, a) => {
                let expected = match resolve(&model.table, *index) {
                    None => Obs::Unavailable,
                    Some(slot) => {
                        let mut co = model.table[slot].take().unwrap();
                        let obs = model.seed(&mut co, a);
                        model.table[slot] = Some(co);
                        obs
                    }
                };
                let slot = resolve(&table.borrow(), *index);
                let got = match slot {
                    None => Obs::Unavailable,
                    Some(slot) => {
                        let mut co = table.borrow_mut()[slot].take().unwrap();
                        let obs = real_seed(&mut co, a);
                        table.borrow_mut()[slot] = Some(co);
                        obs
                    }
                };
                (vec![expected], vec![got])
            }
            Op::Resume(index, step) => {
                let expected = match resolve(&model.table, *index) {
                    None => vec![Obs::Unavailable],
                    Some(slot) => {
                        let mut co = model.table[slot].take().unwrap();
                        let obs = model.resume(&mut co, step);
                        model.table[slot] = Some(co);
                        obs
                    }
                };
                let slot = resolve(&table.borrow(), *index);
                let got = match slot {
                    None => vec![Obs::Unavailable],
                    Some(slot) => {
                        let mut co = table.borrow_mut()[slot].take().unwrap();
                        let obs = real_resume(&mut co, step.clone());
                        table.borrow_mut()[slot] = Some(co);
                        obs
                    }
                };
                (expected, got)
            }
            Op::Drop(index) => {
                let expected = match resolve(&model.table, *index) {
                    None => Obs::Unavailable,
                    Some(slot) => {
                        let co = model.table[slot].take().unwrap();
                        model.drop_co(co);
                        Obs::Dropped
                    }
                };
                let slot = resolve(&table.borrow(), *index);
                let got = match slot {
                    None => Obs::Unavailable,
                    Some(slot) => {
                        let co = table.borrow_mut()[slot].take().unwrap();
                        real_drop(co);
                        Obs::Dropped
                    }
                };
                (vec![expected], vec![got])
            }
            Op::Thread(a) => {
                let mut b = mem::replace(&mut model.thread, MBlock::new(0));
                let expected = model.access(&mut b, a);
                model.thread = b;
                (vec![expected], vec![real_access(a)])
            }
        };
        if expected != got {
            return Err(mismatch("observations", at, op, &expected, &got));
        }
        let mut expected_drops = mem::take(&mut model.drops);
        expected_drops.sort_unstable();
        let drops = take_sorted(&log);
        if expected_drops != drops {
            return Err(mismatch("destructions", at, op, &expected_drops, &drops));
        }
        if BLOCK_ID.get() != 1 {
            return Err(format!(
                "after op #{at} {op:?}, block {} is current instead of the thread's",
                BLOCK_ID.get()
            ));
        }
        let real = table.borrow();
        for (slot, (m, r)) in model.table.iter().zip(real.iter()).enumerate() {
            let m = m.as_ref().map(|m| match m.status {
                MStatus::NotStarted(_) => (false, false),
                MStatus::Suspended => (true, false),
                MStatus::Done => (true, true),
            });
            let r = r.as_ref().map(|r| (r.started(), r.done()));
            if m != r {
                return Err(mismatch(
                    &format!("(started, done) of coroutine {slot}"),
                    at,
                    op,
                    &m,
                    &r,
                ));
            }
        }
    }
    // Whatever is left is dropped, in order.
    let left: Vec<Option<Co>> = mem::take(&mut *table.borrow_mut());
    for co in left.into_iter().flatten() {
        real_drop(co);
    }
    for co in mem::take(&mut model.table).into_iter().flatten() {
        model.drop_co(co);
    }
    let mut expected_drops = mem::take(&mut model.drops);
    expected_drops.sort_unstable();
    let drops = take_sorted(&log);
    if expected_drops != drops {
        return Err(format!(
            "destructions differ when the coroutines left are dropped:\n  model: {expected_drops:?}\n  real:  {drops:?}"
        ));
    }
    Ok((model, log))
}

/// Runs a script on a fresh thread, then checks what the thread's exit
/// destroyed. Adds what the script performed to `total`.
fn check_script(ops: Vec<Op>, total: &Mutex<Tally>) -> Result<(), TestCaseError> {
    let outcome = std::thread::spawn(move || {
        let outcome = run_script(&ops).map(|(model, log)| {
            let mut thread_drops: Vec<(u64, u64)> = model
                .thread
                .vals
                .iter()
                .flatten()
                .filter_map(|v| match v {
                    Val::Opt(Some(tag)) => Some((*tag, 1)),
                    _ => None,
                })
                .collect();
            thread_drops.sort_unstable();
            (thread_drops, log)
        });
        (outcome, TALLY.with_borrow(|t| *t))
    })
    .join();
    let outcome = match outcome {
        Ok((outcome, tally)) => {
            let mut total = total.lock().unwrap();
            total.add(&tally);
            total.scripts += 1;
            outcome
        }
        Err(payload) => {
            return Err(TestCaseError::fail(format!(
                "the script's thread panicked: {}",
                panic_message(&*payload).unwrap_or("<unknown payload>")
            )))
        }
    };
    let (expected, log) = outcome.map_err(TestCaseError::fail)?;
    let drops = take_sorted(&log);
    if expected != drops {
        return Err(TestCaseError::fail(format!(
            "the thread's exit destroyed:\n  model: {expected:?}\n  real:  {drops:?}"
        )));
    }
    Ok(())
}

/// Runs `cases` scripts of up to `max_ops` operations of `mix` each (or
/// `PROPTEST_CASES` scripts), prints what they performed and returns the
/// number of operations.
fn run_model(name: &str, cases: u32, max_ops: usize, mix: Mix) -> u64 {
    quiet_expected_panics();
    let config = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        // Much faster than the default ChaCha in a debug build.
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let scripts = prop::collection::vec(op(mix), 1..=max_ops);
    let total = Mutex::new(Tally::default());
    let result = runner.run(&scripts, |ops| check_script(ops, &total));
    let t = *total.lock().unwrap();
    eprintln!(
        "{name}: {} operations ({} accesses, {} resumes, {} coroutines dropped suspended, \
         {} dropped before their start, {} panics, {} Locals entered) in {} scripts",
        t.ops,
        t.accesses,
        t.resumes,
        t.forced_unwinds,
        t.never_started_drops,
        t.panics,
        t.locals_entered,
        t.scripts,
    );
    if let Err(err) = result {
        panic!("{err}");
    }
    t.ops
}

/// At least this many operations per test, unless `PROPTEST_CASES` says
/// otherwise: two tests, so over a million per run.
const MIN_OPS: u64 = 500_000;

fn check_op_count(ops: u64) {
    if std::env::var_os("PROPTEST_CASES").is_none() {
        assert!(ops >= MIN_OPS, "only {ops} operations ran");
    }
}

/// Many short-lived coroutines: created, resumed a few times, ending every
/// way.
#[test]
fn short_lived_coroutines_agree_with_the_model() {
    let mix = Mix {
        create: 2,
        seed: 2,
        resume: 12,
        drop: 1,
        thread: 2,
        access: 10,
        enter: 2,
        hold: 2,
        leave: 4,
        ret: 1,
        panic: 1,
        nested: 2,
    };
    check_op_count(run_model("short-lived", 1_800, 400, mix));
}

/// Fewer coroutines that live long: deep stacks of entered `Locals` and
/// held references, many nested resumes.
#[test]
fn long_lived_coroutines_agree_with_the_model() {
    let mix = Mix {
        create: 1,
        seed: 2,
        resume: 20,
        drop: 1,
        thread: 1,
        access: 24,
        enter: 4,
        hold: 4,
        leave: 8,
        ret: 1,
        panic: 1,
        nested: 4,
    };
    check_op_count(run_model("long-lived", 700, 1_500, mix));
}
