//! A protobuf text-format parser with the semantics of protobuf's C++ `TextFormat::Parser` (the one
//! Triton uses to read `config.pbtxt`), filling a [`prost_reflect::DynamicMessage`] from a descriptor
//! and keeping the source span of every field so that later diagnostics can point at `line:col`.

mod lexer;
mod parser;

pub use parser::parse;

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// 1-based line and column of a byte offset (columns count characters, as protobuf's errors do).
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..floor_char_boundary(src, offset)];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where a field was written: the span of its name and of the whole `name: value` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpan {
    pub name: Span,
    pub whole: Span,
}

/// A parse failure, with Triton's (protobuf's) message text and where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub span: Span,
    /// Which class of problem this is, for the rule catalogue.
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Syntax, tokens, values (rule 13; `${..}` placeholders are rule 17).
    Syntax,
    /// `Message type "X" has no field named "y".` (rule 14)
    UnknownField,
    /// `Unknown enumeration value ...` (rule 15)
    UnknownEnum,
    /// Non-repeated field or oneof specified more than once (rule 16)
    Repeated,
    /// An unrendered template placeholder such as `${max_batch_size}` (rule 17)
    Placeholder,
}

/// Something the parser accepted but that deserves a warning (rule 18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNote {
    pub path: String,
    pub span: Span,
    pub kind: NoteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// A non-repeated field written twice (accepted because the first value was the default).
    DuplicateField,
    /// A map key written twice; the last value wins.
    DuplicateKey,
    /// An integer literal with a leading zero, read as octal.
    OctalLiteral,
}

/// A parsed message with the spans of its fields, keyed by path (`input[0].dims[1]`,
/// `parameters["KEY"].string_value`).
#[derive(Debug, Clone)]
pub struct Parsed {
    pub message: prost_reflect::DynamicMessage,
    pub spans: std::collections::HashMap<String, FieldSpan>,
    pub notes: Vec<ParseNote>,
}

impl Parsed {
    pub fn span(&self, path: &str) -> Option<FieldSpan> {
        self.spans.get(path).copied()
    }
}
