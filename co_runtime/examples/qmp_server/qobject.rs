//! QEMU's JSON values, and the bytes QEMU writes for them.
//!
//! A QMP client sees QEMU's values through its JSON writer, so the reader
//! and the writer of this server keep QEMU's model of a value: integers
//! that fit `i64`, then `u64`, then a double; strings of Unicode code
//! points; dictionaries that refuse a second value for a key. The writer
//! lays a dictionary out in the order QEMU's hash table iterates it (bucket
//! by bucket of 512, the newest entry of a bucket first), separates with
//! `", "` and `": "`, prints doubles as C's `%.17g` does, and writes ASCII
//! only: every other code point as `\uXXXX` (upper-case hex, a surrogate
//! pair beyond the BMP), DEL included. Lines end in CRLF.

use std::fmt::Write as _;

use serde_json::Value;

/// A value as QEMU holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum QObject {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(String),
    List(Vec<QObject>),
    Dict(QDict),
}

/// A dictionary: keys unique, kept in insertion order; written in QEMU's
/// iteration order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QDict {
    entries: Vec<(String, QObject)>,
}

/// The bucket of QEMU's dictionary a key falls in (its `tdb_hash` modulo
/// the 512 buckets).
fn bucket(key: &str) -> u32 {
    let bytes = key.as_bytes();
    let mut value = 0x238F_13AFu32.wrapping_mul(bytes.len() as u32);
    for (i, &b) in bytes.iter().enumerate() {
        value = value.wrapping_add(u32::from(b) << ((i * 5) % 24));
    }
    1_103_515_243u32.wrapping_mul(value).wrapping_add(12345) % 512
}

impl QDict {
    pub fn new() -> QDict {
        QDict::default()
    }

    pub fn get(&self, key: &str) -> Option<&QObject> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`: a new key is the newest entry, an existing one keeps its
    /// place and gets the new value (as `qdict_put_obj`).
    pub fn insert(&mut self, key: impl Into<String>, value: QObject) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends a key the caller knows is new (the parser checks).
    pub(crate) fn push_new(&mut self, key: String, value: QObject) {
        self.entries.push((key, value));
    }

    /// The entries in QEMU's iteration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &QObject)> {
        let mut order: Vec<(u32, usize)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (bucket(k), i))
            .collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        order.into_iter().map(move |(_, i)| {
            let (k, v) = &self.entries[i];
            (k.as_str(), v)
        })
    }
}

impl QDict {
    /// The key QEMU's input visitor calls unexpected once a command has
    /// taken its arguments (`taken`, in the order the command reads them),
    /// if any is left. The visitor keeps the dictionary's keys in a GLib
    /// hash table, filled in the dictionary's own order and emptied as the
    /// arguments are read, and names the first key its iteration finds:
    /// so the answer is what [`KeySet`] gives, not the first key of the
    /// request.
    pub fn first_key_left(&self, taken: &[&str]) -> Option<&str> {
        let mut set = KeySet::new();
        for (key, _) in self.iter() {
            set.insert(key);
        }
        for key in taken {
            set.remove(key);
        }
        set.first()
    }
}

/// The layout of GLib's string hash table (GLib 2.74, the version QEMU
/// links here), as far as the order of its iteration goes: open
/// addressing over a power-of-two array, the first probe at
/// `hash * 11 mod p` (p the largest prime below the size), then steps of 1,
/// 2, 3... wrapping at the size; removed entries leave tombstones; the
/// table grows or shrinks in place when its load leaves 1/4..15/16.
struct KeySet<'a> {
    /// 0 for a free slot, 1 for a tombstone, else the key's hash (at
    /// least 2).
    hashes: Vec<u32>,
    keys: Vec<Option<&'a str>>,
    shift: u32,
    /// Keys held, and keys plus tombstones.
    live: usize,
    occupied: usize,
}

/// The largest prime below each power of two, by exponent.
const PRIME_BELOW: [u32; 32] = [
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
    262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393, 67108859, 134217689,
    268435399, 536870909, 1073741789, 2147483647,
];

/// The smallest table: 8 slots.
const MIN_SHIFT: u32 = 3;

/// GLib's `g_str_hash`: djb2 over the bytes as signed chars, up to the
/// first NUL (where a C string ends); 0 and 1 are reserved, and become 2.
fn str_hash(key: &str) -> u32 {
    let hash = key.bytes().take_while(|&b| b != 0).fold(5381u32, |h, b| {
        (h << 5).wrapping_add(h).wrapping_add(b as i8 as u32)
    });
    hash.max(2)
}

impl<'a> KeySet<'a> {
    fn new() -> KeySet<'a> {
        KeySet {
            hashes: vec![0; 1 << MIN_SHIFT],
            keys: vec![None; 1 << MIN_SHIFT],
            shift: MIN_SHIFT,
            live: 0,
            occupied: 0,
        }
    }

    fn size(&self) -> usize {
        1 << self.shift
    }

    fn home(&self, hash: u32) -> usize {
        (hash.wrapping_mul(11) % PRIME_BELOW[self.shift as usize]) as usize
    }

    /// The slot of `key` if it is held, else where it would go: the first
    /// tombstone on its probe path, or the free slot that ends it.
    fn slot(&self, key: &str, hash: u32) -> usize {
        let mask = self.size() - 1;
        let mut at = self.home(hash);
        let mut tombstone = None;
        let mut step = 0;
        while self.hashes[at] != 0 {
            if self.hashes[at] == hash && self.keys[at] == Some(key) {
                return at;
            }
            if self.hashes[at] == 1 && tombstone.is_none() {
                tombstone = Some(at);
            }
            step += 1;
            at = (at + step) & mask;
        }
        tombstone.unwrap_or(at)
    }

    fn insert(&mut self, key: &'a str) {
        let hash = str_hash(key);
        let at = self.slot(key, hash);
        let before = self.hashes[at];
        if before >= 2 {
            return;
        }
        self.hashes[at] = hash;
        self.keys[at] = Some(key);
        self.live += 1;
        if before == 0 {
            self.occupied += 1;
            self.maybe_resize();
        }
    }

    fn remove(&mut self, key: &str) {
        let at = self.slot(key, str_hash(key));
        if self.hashes[at] < 2 {
            return;
        }
        self.hashes[at] = 1;
        self.keys[at] = None;
        self.live -= 1;
        self.maybe_resize();
    }

    fn first(&self) -> Option<&'a str> {
        (0..self.size())
            .find(|&i| self.hashes[i] >= 2)
            .and_then(|i| self.keys[i])
    }

    fn maybe_resize(&mut self) {
        let size = self.size();
        if (size > self.live * 4 && size > 1 << MIN_SHIFT)
            || size <= self.occupied + self.occupied / 16
        {
            self.resize();
        }
    }

    /// Rebuilds the table for its number of keys, in place: each key not
    /// placed yet goes to the first slot of its probe path that no placed
    /// key holds, and displaces what was there, which is placed next.
    fn resize(&mut self) {
        let old_size = self.size();
        // The number of bits of a third more than the keys held.
        let wanted = (self.live as f64 * 1.333) as u32;
        self.shift = (u32::BITS - wanted.leading_zeros()).max(MIN_SHIFT);
        let size = self.size();
        let mask = size - 1;
        if size > old_size {
            self.hashes.resize(size, 0);
            self.keys.resize(size, None);
        }
        let mut placed = vec![false; size.max(old_size)];
        for i in 0..old_size {
            let mut hash = self.hashes[i];
            if hash < 2 {
                self.hashes[i] = 0;
                continue;
            }
            if placed[i] {
                continue;
            }
            self.hashes[i] = 0;
            let mut key = self.keys[i].take();
            loop {
                let mut at = self.home(hash);
                let mut step = 0;
                while placed[at] {
                    step += 1;
                    at = (at + step) & mask;
                }
                placed[at] = true;
                let displaced = std::mem::replace(&mut self.hashes[at], hash);
                let displaced_key = std::mem::replace(&mut self.keys[at], key);
                if displaced < 2 {
                    break;
                }
                hash = displaced;
                key = displaced_key;
            }
        }
        self.hashes.truncate(size);
        self.keys.truncate(size);
        self.occupied = self.live;
    }
}

impl QObject {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            QObject::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&QDict> {
        match self {
            QObject::Dict(d) => Some(d),
            _ => None,
        }
    }
}

impl From<&Value> for QObject {
    fn from(v: &Value) -> QObject {
        match v {
            Value::Null => QObject::Null,
            Value::Bool(b) => QObject::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => QObject::Int(i),
                (None, Some(u)) => QObject::Uint(u),
                _ => QObject::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => QObject::Str(s.clone()),
            Value::Array(a) => QObject::List(a.iter().map(QObject::from).collect()),
            Value::Object(o) => {
                let mut d = QDict::new();
                for (k, v) in o {
                    d.insert(k.clone(), QObject::from(v));
                }
                QObject::Dict(d)
            }
        }
    }
}

impl From<Value> for QObject {
    fn from(v: Value) -> QObject {
        QObject::from(&v)
    }
}

/// Decodes one code point of QEMU's modified UTF-8 from the front of
/// `bytes`: the code point (`None` for an invalid sequence: a stray or
/// missing continuation byte, 0xFE/0xFF, an overlong form other than
/// `C0 80` for U+0000, a surrogate, a noncharacter, beyond U+10FFFF) and
/// how many bytes it took (at least one).
pub fn decode_mod_utf8(bytes: &[u8]) -> (Option<u32>, usize) {
    let lead = bytes[0];
    if lead < 0x80 {
        return (Some(u32::from(lead)), 1);
    }
    if lead >= 0xFE || lead & 0x40 == 0 {
        return (None, 1);
    }
    let len = lead.leading_ones() as usize; // 2..=6
    let mut cp = u32::from(lead) & ((1 << (7 - len)) - 1);
    let mut used = 1;
    while used < len {
        match bytes.get(used) {
            Some(&b) if b & 0xC0 == 0x80 => {
                cp = (cp << 6) | u32::from(b & 0x3F);
                used += 1;
            }
            _ => return (None, used),
        }
    }
    const MIN: [u32; 5] = [0x80, 0x800, 0x1_0000, 0x20_0000, 0x400_0000];
    let valid = valid_code_point(cp) && (cp >= MIN[len - 2] || (cp == 0 && len == 2));
    (valid.then_some(cp), used)
}

/// A code point QEMU accepts in a string: in range, not a surrogate, not a
/// noncharacter.
pub fn valid_code_point(cp: u32) -> bool {
    cp <= 0x10_FFFF
        && !(0xFDD0..=0xFDEF).contains(&cp)
        && cp & 0xFFFE != 0xFFFE
        && !(0xD800..=0xDFFF).contains(&cp)
}

/// Writes a string as QEMU does. `bytes` need not be UTF-8 (a lexical
/// error quotes the raw input): each invalid sequence becomes U+FFFD.
pub fn write_str_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut rest = bytes;
    while !rest.is_empty() {
        let (cp, used) = decode_mod_utf8(rest);
        rest = &rest[used..];
        match cp {
            Some(0x22) => out.extend_from_slice(b"\\\""),
            Some(0x5C) => out.extend_from_slice(b"\\\\"),
            Some(0x08) => out.extend_from_slice(b"\\b"),
            Some(0x0C) => out.extend_from_slice(b"\\f"),
            Some(0x0A) => out.extend_from_slice(b"\\n"),
            Some(0x0D) => out.extend_from_slice(b"\\r"),
            Some(0x09) => out.extend_from_slice(b"\\t"),
            Some(cp @ 0x20..=0x7E) => out.push(cp as u8),
            other => {
                let cp = other.unwrap_or(0xFFFD);
                let mut s = String::new();
                if cp > 0xFFFF {
                    let c = cp - 0x1_0000;
                    let _ = write!(
                        s,
                        "\\u{:04X}\\u{:04X}",
                        0xD800 + (c >> 10),
                        0xDC00 + (c & 0x3FF)
                    );
                } else {
                    let _ = write!(s, "\\u{cp:04X}");
                }
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// A double as C's `printf("%.17g")` prints it (QEMU's number writer).
pub fn format_double(x: f64) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() { "-nan" } else { "nan" }.into();
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf" } else { "inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // 17 significant digits, in scientific form first: d.dddde±x.
    let sci = format!("{x:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..17).contains(&exp) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (16 - exp).max(0) as usize;
    trim_fraction(&format!("{x:.decimals$}")).to_string()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Appends `obj` as QEMU writes it.
pub fn write_json(obj: &QObject, out: &mut Vec<u8>) {
    match obj {
        QObject::Null => out.extend_from_slice(b"null"),
        QObject::Bool(true) => out.extend_from_slice(b"true"),
        QObject::Bool(false) => out.extend_from_slice(b"false"),
        QObject::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        QObject::Uint(u) => out.extend_from_slice(u.to_string().as_bytes()),
        QObject::Double(d) => out.extend_from_slice(format_double(*d).as_bytes()),
        QObject::Str(s) => write_str_bytes(s.as_bytes(), out),
        QObject::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        QObject::Dict(dict) => {
            out.push(b'{');
            for (i, (k, v)) in dict.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_str_bytes(k.as_bytes(), out);
                out.extend_from_slice(b": ");
                write_json(v, out);
            }
            out.push(b'}');
        }
    }
}

/// One line of monitor output: the value, then CRLF (QEMU's monitor turns
/// each newline it prints into CRLF).
pub fn encode_line(obj: &QObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_json(obj, &mut out);
    out.extend_from_slice(b"\r\n");
    out
}
