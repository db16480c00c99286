//! The JSON reader of the monitor: QEMU's dialect, QEMU's recovery.
//!
//! Three stages, as in QEMU: a lexer (a byte-driven state machine), a
//! streamer that collects tokens until brackets and braces balance, and a
//! recursive-descent parser over the collected tokens.
//!
//! The dialect: RFC 8259 plus single-quoted strings (which may hold `"`)
//! and the `\'` escape in both kinds of string; strings must be valid
//! (modified) UTF-8 of valid code points (no surrogates, no
//! noncharacters; `C0 80` is U+0000); a key may appear once per object.
//!
//! Recovery: a lexical error (a byte no token may hold here: a control
//! character, 0xFE/0xFF, `%`, a digit after a leading zero, ...) answers
//! `JSON parse error, stray '...'` with the bad token, drops every token
//! collected so far, and skips input up to the next structural character
//! (`{}[]:,`), ASCII control character other than tab, or 0xFE/0xFF; a
//! newline is a control character, so is the 0xFF a client may send to
//! reset the parser. Nothing waits for a newline.
//!
//! Limits: a message of more than 64 MiB of tokens, more than 2 Mi tokens,
//! or nesting deeper than 1024 is refused when it crosses the limit, and
//! reading goes on with the input that follows.

use std::collections::HashSet;

use crate::qobject::{decode_mod_utf8, valid_code_point, QDict, QObject};

/// At most this many bytes of tokens make one message.
pub const MAX_TOKEN_SIZE: usize = 64 << 20;
/// At most this many tokens make one message.
pub const MAX_TOKEN_COUNT: usize = 2 << 20;
/// Brackets and braces open at once, at most.
pub const MAX_NESTING: i64 = 1 << 10;

/// One parsed message, or why there is none.
pub type Message = Result<QObject, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    Recovery,
    DqString,
    DqEscape,
    SqString,
    SqEscape,
    Zero,
    Sign,
    Digits,
    Mantissa,
    MantissaDigits,
    ExpE,
    ExpSign,
    ExpDigits,
    Keyword,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    LCurly,
    RCurly,
    LSquare,
    RSquare,
    Colon,
    Comma,
    Integer,
    Float,
    Keyword,
    String,
}

/// What a byte does in a state.
enum Step {
    /// Consumed; the token goes on in this state.
    Go(State),
    /// Consumed, and it ends a token.
    Token(Kind),
    /// Not consumed: the token before it ends (a number, a keyword).
    Ends(Kind),
    /// Not consumed: back to the start state (recovery found a place).
    Restart,
    /// Consumed, and it cannot be part of any token here.
    Error,
}

fn step(state: State, b: u8) -> Step {
    use State::*;
    use Step::Go;
    let digit = b.is_ascii_digit();
    match state {
        Start => match b {
            b'"' => Go(DqString),
            b'\'' => Go(SqString),
            b'0' => Go(Zero),
            b'1'..=b'9' => Go(Digits),
            b'-' => Go(Sign),
            b'{' => Step::Token(Kind::LCurly),
            b'}' => Step::Token(Kind::RCurly),
            b'[' => Step::Token(Kind::LSquare),
            b']' => Step::Token(Kind::RSquare),
            b',' => Step::Token(Kind::Comma),
            b':' => Step::Token(Kind::Colon),
            b'a'..=b'z' => Go(State::Keyword),
            b' ' | b'\t' | b'\r' | b'\n' => Go(Start),
            _ => Step::Error,
        },
        Recovery => match b {
            b'\t' => Go(Recovery),
            0..=0x1F | 0xFE | 0xFF | b'[' | b']' | b'{' | b'}' | b':' | b',' => Step::Restart,
            _ => Go(Recovery),
        },
        DqString | SqString => {
            let quote = if state == DqString { b'"' } else { b'\'' };
            match b {
                b'\\' => Go(if state == DqString {
                    DqEscape
                } else {
                    SqEscape
                }),
                _ if b == quote => Step::Token(Kind::String),
                0x20..=0xFD => Go(state),
                _ => Step::Error,
            }
        }
        DqEscape | SqEscape => match b {
            0x20..=0xFD => Go(if state == DqEscape {
                DqString
            } else {
                SqString
            }),
            _ => Step::Error,
        },
        Zero => match b {
            b'.' => Go(Mantissa),
            _ if digit => Step::Error,
            _ => Step::Ends(Kind::Integer),
        },
        Sign => match b {
            b'0' => Go(Zero),
            _ if digit => Go(Digits),
            _ => Step::Error,
        },
        Digits => match b {
            b'.' => Go(Mantissa),
            b'e' | b'E' => Go(ExpE),
            _ if digit => Go(Digits),
            _ => Step::Ends(Kind::Integer),
        },
        Mantissa => match b {
            _ if digit => Go(MantissaDigits),
            _ => Step::Error,
        },
        MantissaDigits => match b {
            b'e' | b'E' => Go(ExpE),
            _ if digit => Go(MantissaDigits),
            _ => Step::Ends(Kind::Float),
        },
        ExpE => match b {
            b'-' | b'+' => Go(ExpSign),
            _ if digit => Go(ExpDigits),
            _ => Step::Error,
        },
        ExpSign => match b {
            _ if digit => Go(ExpDigits),
            _ => Step::Error,
        },
        ExpDigits => match b {
            _ if digit => Go(ExpDigits),
            _ => Step::Ends(Kind::Float),
        },
        State::Keyword => match b {
            b'a'..=b'z' => Go(State::Keyword),
            _ => Step::Ends(Kind::Keyword),
        },
    }
}

/// Turns a stream of bytes into messages; feed it as bytes arrive.
#[derive(Debug)]
pub struct JsonStream {
    state: State,
    /// The token being lexed.
    token: Vec<u8>,
    brace: i64,
    bracket: i64,
    /// The collected tokens: kinds and spans of `text`.
    tokens: Vec<(Kind, usize, usize)>,
    text: Vec<u8>,
}

impl Default for JsonStream {
    fn default() -> JsonStream {
        JsonStream {
            state: State::Start,
            token: Vec::new(),
            brace: 0,
            bracket: 0,
            tokens: Vec::new(),
            text: Vec::new(),
        }
    }
}

impl JsonStream {
    /// Feeds one byte; it completes at most two messages (a number ended by
    /// a bracket that unbalances, say).
    pub fn feed_byte(&mut self, b: u8, out: &mut Vec<Message>) {
        // A byte that ends the token before it is looked at again from
        // `Start`; every other one is consumed at once.
        loop {
            let consumed = match step(self.state, b) {
                Step::Go(next @ (State::Start | State::Recovery)) => {
                    self.token.clear();
                    self.state = next;
                    true
                }
                Step::Go(next) => {
                    self.token.push(b);
                    self.state = next;
                    true
                }
                Step::Token(kind) => {
                    self.token.push(b);
                    self.token_done(kind, out);
                    self.state = State::Start;
                    true
                }
                Step::Ends(kind) => {
                    self.token_done(kind, out);
                    self.state = State::Start;
                    false
                }
                Step::Restart => {
                    self.token.clear();
                    self.state = State::Start;
                    false
                }
                Step::Error => {
                    self.token.push(b);
                    let text = std::mem::take(&mut self.token);
                    self.stray(&text, out);
                    self.state = State::Recovery;
                    true
                }
            };
            if consumed {
                break;
            }
        }
        if self.token.len() > MAX_TOKEN_SIZE {
            // One token alone is over the limit: refused, and lexing starts
            // afresh with the next byte.
            self.token = Vec::new();
            self.state = State::Start;
            self.emit(Err("JSON token size limit exceeded".into()), out);
        }
    }

    /// Bytes held for the message being read: its tokens so far and the
    /// token being lexed. QEMU's limits bound it.
    pub fn buffered(&self) -> usize {
        self.token.len()
            + self.text.len()
            + self.tokens.len() * std::mem::size_of::<(Kind, usize, usize)>()
    }

    fn stray(&mut self, text: &[u8], out: &mut Vec<Message>) {
        // QEMU quotes the token as a C string: up to its first NUL.
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        let msg = format!("JSON parse error, stray '{}'", lossy(&text[..end]));
        self.emit(Err(msg), out);
    }

    fn emit(&mut self, msg: Message, out: &mut Vec<Message>) {
        self.brace = 0;
        self.bracket = 0;
        self.tokens.clear();
        self.text.clear();
        if self.text.capacity() > 64 << 10 {
            self.text = Vec::new();
            self.tokens = Vec::new();
        }
        out.push(msg);
    }

    fn token_done(&mut self, kind: Kind, out: &mut Vec<Message>) {
        let token = std::mem::take(&mut self.token);
        match kind {
            Kind::LCurly => self.brace += 1,
            Kind::RCurly => self.brace -= 1,
            Kind::LSquare => self.bracket += 1,
            Kind::RSquare => self.bracket -= 1,
            _ => {}
        }
        if self.text.len() + token.len() + 1 > MAX_TOKEN_SIZE {
            return self.emit(Err("JSON token size limit exceeded".into()), out);
        }
        if self.tokens.len() + 1 > MAX_TOKEN_COUNT {
            return self.emit(Err("JSON token count limit exceeded".into()), out);
        }
        if self.brace + self.bracket > MAX_NESTING {
            return self.emit(Err("JSON nesting depth limit exceeded".into()), out);
        }
        let start = self.text.len();
        self.text.extend_from_slice(&token);
        self.tokens.push((kind, start, self.text.len()));
        self.token = token;
        self.token.clear();
        if (self.brace > 0 || self.bracket > 0) && self.brace >= 0 && self.bracket >= 0 {
            return;
        }
        let mut parser = Parser {
            text: &self.text,
            tokens: &self.tokens,
            at: 0,
        };
        let msg = parser.value();
        self.emit(msg, out);
    }
}

/// Bytes as text the way QEMU's writer shows them: each invalid sequence
/// one U+FFFD, `C0 80` a NUL.
pub fn lossy(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        let (cp, used) = decode_mod_utf8(rest);
        s.push(cp.and_then(char::from_u32).unwrap_or('\u{FFFD}'));
        rest = &rest[used..];
    }
    s
}

struct Parser<'a> {
    text: &'a [u8],
    tokens: &'a [(Kind, usize, usize)],
    at: usize,
}

type Parsed = Result<QObject, String>;

/// A parser error as QEMU words it. QEMU formats the part after the prefix
/// into a buffer of 1024 bytes: a longer one (an invalid keyword of that
/// length, the only one that can be) is cut at 1023.
fn error(msg: &str) -> String {
    let mut end = msg.len().min(1023);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("JSON parse error, {}", &msg[..end])
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Kind> {
        self.tokens.get(self.at).map(|t| t.0)
    }

    fn pop(&mut self) -> Result<(Kind, &'a [u8]), String> {
        let &(kind, start, end) = self
            .tokens
            .get(self.at)
            .ok_or_else(|| error("premature EOI"))?;
        self.at += 1;
        let text: &'a [u8] = self.text;
        Ok((kind, &text[start..end]))
    }

    fn value(&mut self) -> Parsed {
        match self.peek() {
            None => Err(error("premature EOI")),
            Some(Kind::LCurly) => self.object(),
            Some(Kind::LSquare) => self.array(),
            Some(Kind::Integer | Kind::Float | Kind::String | Kind::Keyword) => self.literal(),
            Some(_) => Err(error("expecting value")),
        }
    }

    fn object(&mut self) -> Parsed {
        self.pop()?; // {
        let mut dict = QDict::new();
        let mut seen = HashSet::new();
        if self.peek().is_none() {
            return Err(error("premature EOI"));
        }
        if self.peek() == Some(Kind::RCurly) {
            self.pop()?;
            return Ok(QObject::Dict(dict));
        }
        loop {
            self.pair(&mut dict, &mut seen)?;
            match self.pop()?.0 {
                Kind::RCurly => return Ok(QObject::Dict(dict)),
                Kind::Comma => {}
                _ => return Err(error("expected separator in dict")),
            }
        }
    }

    fn pair(&mut self, dict: &mut QDict, seen: &mut HashSet<String>) -> Result<(), String> {
        if self.peek().is_none() {
            return Err(error("premature EOI"));
        }
        let QObject::Str(key) = self.value()? else {
            return Err(error("key is not a string in object"));
        };
        if self.pop()?.0 != Kind::Colon {
            return Err(error("missing : in object pair"));
        }
        let value = self.value()?;
        if !seen.insert(key.clone()) {
            return Err(error("duplicate key"));
        }
        dict.push_new(key, value);
        Ok(())
    }

    fn array(&mut self) -> Parsed {
        self.pop()?; // [
        let mut list = Vec::new();
        if self.peek().is_none() {
            return Err(error("premature EOI"));
        }
        if self.peek() == Some(Kind::RSquare) {
            self.pop()?;
            return Ok(QObject::List(list));
        }
        loop {
            list.push(self.value()?);
            match self.pop()?.0 {
                Kind::RSquare => return Ok(QObject::List(list)),
                Kind::Comma => {}
                _ => return Err(error("expected separator in list")),
            }
        }
    }

    fn literal(&mut self) -> Parsed {
        let (kind, text) = self.pop()?;
        match kind {
            Kind::String => parse_string(text).map(QObject::Str),
            Kind::Keyword => match text {
                b"true" => Ok(QObject::Bool(true)),
                b"false" => Ok(QObject::Bool(false)),
                b"null" => Ok(QObject::Null),
                _ => Err(error(&format!("invalid keyword '{}'", lossy(text)))),
            },
            _ => {
                // Digits, signs, dots and exponents only: ASCII.
                let s = std::str::from_utf8(text).unwrap_or_default();
                if kind == Kind::Integer {
                    if let Ok(i) = s.parse::<i64>() {
                        return Ok(QObject::Int(i));
                    }
                    if let Ok(u) = s.parse::<u64>() {
                        return Ok(QObject::Uint(u));
                    }
                }
                Ok(QObject::Double(s.parse::<f64>().unwrap_or(f64::NAN)))
            }
        }
    }
}

fn hex4(t: &[u8], at: usize) -> Option<u32> {
    let digits = t.get(at..at + 4)?;
    let s = std::str::from_utf8(digits).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

/// A string token (quotes included) to its text.
fn parse_string(t: &[u8]) -> Result<String, String> {
    let quote = t[0];
    let mut s = String::new();
    let mut i = 1;
    while i < t.len() && t[i] != quote {
        if t[i] != b'\\' {
            let (cp, used) = decode_mod_utf8(&t[i..]);
            let c = cp
                .and_then(char::from_u32)
                .ok_or_else(|| error("invalid UTF-8 sequence in string"))?;
            s.push(c);
            i += used;
            continue;
        }
        let begin = i;
        let c = t.get(i + 1).copied().unwrap_or(0);
        i += 2;
        match c {
            b'"' | b'\'' | b'\\' | b'/' => s.push(char::from(c)),
            b'b' => s.push('\u{8}'),
            b'f' => s.push('\u{c}'),
            b'n' => s.push('\n'),
            b'r' => s.push('\r'),
            b't' => s.push('\t'),
            b'u' => {
                let mut cp = hex4(t, i);
                i += 4;
                if let Some(lead @ 0xD800..=0xDBFF) = cp {
                    if t.get(i) == Some(&b'\\') && t.get(i + 1) == Some(&b'u') {
                        cp = match hex4(t, i + 2) {
                            Some(trail @ 0xDC00..=0xDFFF) => {
                                i += 6;
                                Some(0x1_0000 + ((lead & 0x3FF) << 10) + (trail & 0x3FF))
                            }
                            _ => None,
                        };
                    }
                }
                match cp
                    .filter(|&cp| valid_code_point(cp))
                    .and_then(char::from_u32)
                {
                    Some(c) => s.push(c),
                    None => {
                        let shown = &t[begin..i.min(t.len())];
                        return Err(error(&format!(
                            "{} is not a valid Unicode character",
                            lossy(shown)
                        )));
                    }
                }
            }
            _ => return Err(error("invalid escape sequence in string")),
        }
    }
    Ok(s)
}
