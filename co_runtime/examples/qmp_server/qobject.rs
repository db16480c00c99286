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
