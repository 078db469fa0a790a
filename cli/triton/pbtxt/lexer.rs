//! Tokenizer for the protobuf text format, following the rules of protobuf's C++ `io::Tokenizer` as
//! configured by `TextFormat::Parser` (`#` comments, `f` after floats, a space required after numbers).

use super::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Identifier,
    Integer,
    Float,
    String,
    Symbol,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub message: String,
    pub offset: usize,
}

pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
}

fn is_letter(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src: src.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> u8 {
        self.src.get(self.pos).copied().unwrap_or(0)
    }

    fn peek_at(&self, n: usize) -> u8 {
        self.src.get(self.pos + n).copied().unwrap_or(0)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn err<T>(&self, message: impl Into<String>, offset: usize) -> Result<T, LexError> {
        Err(LexError {
            message: message.into(),
            offset,
        })
    }

    fn skip_whitespace_and_comments(&mut self) -> Result<(), LexError> {
        loop {
            if self.at_end() {
                return Ok(());
            }
            let c = self.peek();
            match c {
                b' ' | b'\n' | b'\t' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'#' => {
                    while !self.at_end() && self.peek() != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// The next token, or an error for text the protobuf tokenizer rejects.
    pub fn next_token(&mut self) -> Result<Token, LexError> {
        self.skip_whitespace_and_comments()?;
        let start = self.pos;
        if self.at_end() {
            return Ok(Token {
                kind: TokenKind::End,
                span: Span::new(start, start),
            });
        }
        let c = self.peek();
        let kind = if is_letter(c) {
            while is_letter(self.peek()) || self.peek().is_ascii_digit() {
                self.pos += 1;
            }
            TokenKind::Identifier
        } else if c.is_ascii_digit() || (c == b'.' && self.peek_at(1).is_ascii_digit()) {
            self.number()?
        } else if c == b'"' || c == b'\'' {
            self.string(c)?;
            TokenKind::String
        } else if c < 0x20 || c == 0x7f {
            return self.err("Invalid control characters encountered in text.", start);
        } else if c >= 0x80 {
            let ch = std::str::from_utf8(&self.src[start..])
                .ok()
                .and_then(|s| s.chars().next())
                .map(|ch| format!("U+{:04X}", ch as u32))
                .unwrap_or_else(|| format!("0x{c:02x}"));
            return self.err(format!("Interpreting non ascii codepoint {ch}."), start);
        } else {
            self.pos += 1;
            TokenKind::Symbol
        };
        Ok(Token {
            kind,
            span: Span::new(start, self.pos),
        })
    }

    fn number(&mut self) -> Result<TokenKind, LexError> {
        let start = self.pos;
        let started_with_zero = self.peek() == b'0';
        let started_with_dot = self.peek() == b'.';
        self.pos += 1;
        let mut is_float = false;
        if started_with_zero && matches!(self.peek(), b'x' | b'X') {
            self.pos += 1;
            if !self.peek().is_ascii_hexdigit() {
                return self.err("\"0x\" must be followed by hex digits.", self.pos);
            }
            while self.peek().is_ascii_hexdigit() {
                self.pos += 1;
            }
        } else if started_with_zero && self.peek().is_ascii_digit() {
            while (b'0'..=b'7').contains(&self.peek()) {
                self.pos += 1;
            }
            if self.peek().is_ascii_digit() {
                return self.err(
                    "Numbers starting with leading zero must be in octal.",
                    self.pos,
                );
            }
        } else {
            if started_with_dot {
                is_float = true;
                while self.peek().is_ascii_digit() {
                    self.pos += 1;
                }
            } else {
                while self.peek().is_ascii_digit() {
                    self.pos += 1;
                }
                if self.peek() == b'.' {
                    self.pos += 1;
                    is_float = true;
                    while self.peek().is_ascii_digit() {
                        self.pos += 1;
                    }
                }
            }
            if matches!(self.peek(), b'e' | b'E') {
                self.pos += 1;
                is_float = true;
                if matches!(self.peek(), b'-' | b'+') {
                    self.pos += 1;
                }
                if !self.peek().is_ascii_digit() {
                    return self.err("\"e\" must be followed by exponent.", self.pos);
                }
                while self.peek().is_ascii_digit() {
                    self.pos += 1;
                }
            }
            if matches!(self.peek(), b'f' | b'F') {
                self.pos += 1;
                is_float = true;
            }
        }
        if is_letter(self.peek()) {
            return self.err("Need space between number and identifier.", self.pos);
        }
        if self.peek() == b'.' {
            let msg = if is_float {
                "Already saw decimal point or exponent; can't have another one."
            } else {
                "Hex and octal numbers must be integers."
            };
            return self.err(msg, self.pos);
        }
        let _ = start;
        Ok(if is_float {
            TokenKind::Float
        } else {
            TokenKind::Integer
        })
    }

    fn string(&mut self, delim: u8) -> Result<(), LexError> {
        self.pos += 1;
        loop {
            if self.at_end() {
                return self.err("Unexpected end of string.", self.pos);
            }
            let c = self.peek();
            match c {
                b'\n' => {
                    return self.err("String literals cannot cross line boundaries.", self.pos);
                }
                b'\\' => {
                    self.pos += 1;
                    let e = self.peek();
                    let ok = match e {
                        b'a' | b'b' | b'f' | b'n' | b'r' | b't' | b'v' | b'\\' | b'?' | b'\''
                        | b'"' => {
                            self.pos += 1;
                            true
                        }
                        b'0'..=b'7' => {
                            self.pos += 1;
                            true
                        }
                        b'x' | b'X' if self.peek_at(1).is_ascii_hexdigit() => {
                            self.pos += 2;
                            true
                        }
                        b'u' => self.hex_run(4),
                        b'U' => self.hex_run(8),
                        _ => false,
                    };
                    if !ok {
                        return self.err("Invalid escape sequence in string literal.", self.pos);
                    }
                }
                _ if c == delim => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => self.pos += 1,
            }
        }
    }

    fn hex_run(&mut self, n: usize) -> bool {
        if (1..=n).all(|i| self.peek_at(i).is_ascii_hexdigit()) {
            self.pos += n + 1;
            true
        } else {
            false
        }
    }
}

/// Decodes the body of a string token (without its quotes) the way protobuf's text parser does.
/// Returns the bytes, which may not be UTF-8 (the caller checks that for `string` fields).
pub fn unescape(body: &str) -> Vec<u8> {
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let e = b.get(i).copied().unwrap_or(0);
        i += 1;
        match e {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut code = u32::from(e - b'0');
                for _ in 0..2 {
                    match b.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            code = code * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(code as u8);
            }
            b'x' | b'X' => {
                let mut code = 0u32;
                for _ in 0..2 {
                    match b.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            code = code * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(code as u8);
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let mut code = read_hex(&b[i..i + n]);
                i += n;
                // A high surrogate followed by an escaped low surrogate forms one code point.
                if (0xD800..0xDC00).contains(&code)
                    && b.get(i) == Some(&b'\\')
                    && b.get(i + 1) == Some(&b'u')
                    && i + 6 <= b.len()
                {
                    let low = read_hex(&b[i + 2..i + 6]);
                    if (0xDC00..0xE000).contains(&low) {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        i += 6;
                    }
                }
                match char::from_u32(code) {
                    Some(ch) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    // A lone surrogate or a code point past U+10FFFF: kept as invalid bytes so that
                    // the UTF-8 check of string fields rejects it.
                    None => out.push(0xff),
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn read_hex(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |acc, d| {
        acc.saturating_mul(16) + (*d as char).to_digit(16).unwrap_or(0)
    })
}
