//! Recursive-descent parser mirroring `google::protobuf::TextFormat::Parser::ParserImpl`.

use std::collections::HashMap;

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

use super::lexer::{Lexer, Token, TokenKind, unescape};
use super::{FieldSpan, NoteKind, ParseError, ParseErrorKind, ParseNote, Parsed, Span};

type PResult<T> = Result<T, ParseError>;

/// Parses `src` as a text-format message of type `desc`.
pub fn parse(src: &str, desc: &MessageDescriptor) -> Result<Parsed, ParseError> {
    let mut p = Parser {
        src,
        lexer: Lexer::new(src),
        tok: Token {
            kind: TokenKind::End,
            span: Span::default(),
        },
        spans: Vec::new(),
        notes: Vec::new(),
        depth: 0,
        last_end: 0,
    };
    p.advance()?;
    let mut msg = DynamicMessage::new(desc.clone());
    while p.tok.kind != TokenKind::End {
        p.field(&mut msg, "")?;
    }
    Ok(Parsed {
        message: msg,
        spans: p.spans.into_iter().collect::<HashMap<_, _>>(),
        notes: p.notes,
    })
}

/// Nesting deeper than this is refused (protobuf's own default recursion limit is 100).
const MAX_DEPTH: usize = 100;

struct Parser<'a> {
    src: &'a str,
    lexer: Lexer<'a>,
    tok: Token,
    /// Spans in the order fields were read; later entries for the same path replace earlier ones
    /// when collected, except that `record` keeps the first occurrence of a path.
    spans: Vec<(String, FieldSpan)>,
    notes: Vec<ParseNote>,
    depth: usize,
    last_end: usize,
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn map_key_text(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => format!("{s:?}"),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(v) => v.to_string(),
        MapKey::I64(v) => v.to_string(),
        MapKey::U32(v) => v.to_string(),
        MapKey::U64(v) => v.to_string(),
    }
}

impl<'a> Parser<'a> {
    fn text(&self, t: Token) -> &'a str {
        &self.src[t.span.start..t.span.end]
    }

    fn advance(&mut self) -> PResult<Token> {
        let prev = self.tok;
        self.last_end = prev.span.end;
        let src = self.src;
        self.tok = self.lexer.next_token().map_err(|e| {
            let width = src[e.offset..].chars().next().map_or(0, char::len_utf8);
            ParseError {
                message: e.message,
                span: Span::new(e.offset, e.offset + width),
                kind: ParseErrorKind::Syntax,
            }
        })?;
        Ok(prev)
    }

    fn error<T>(&self, message: impl Into<String>, kind: ParseErrorKind) -> PResult<T> {
        self.error_at(message, kind, self.tok.span)
    }

    fn error_at<T>(
        &self,
        message: impl Into<String>,
        kind: ParseErrorKind,
        span: Span,
    ) -> PResult<T> {
        // An unrendered template placeholder (`${max_batch_size}`) where a value belongs.
        let kind = if self.src[span.start..].starts_with("${") {
            ParseErrorKind::Placeholder
        } else {
            kind
        };
        Err(ParseError {
            message: message.into(),
            span,
            kind,
        })
    }

    fn looking_at(&self, sym: &str) -> bool {
        self.tok.kind == TokenKind::Symbol && self.text(self.tok) == sym
    }

    fn try_consume(&mut self, sym: &str) -> PResult<bool> {
        if self.looking_at(sym) {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn consume(&mut self, sym: &str) -> PResult<()> {
        if self.try_consume(sym)? {
            Ok(())
        } else {
            self.error(
                format!("Expected \"{sym}\", found \"{}\".", self.text(self.tok)),
                ParseErrorKind::Syntax,
            )
        }
    }

    fn record(&mut self, path: String, span: FieldSpan) {
        self.spans.push((path, span));
    }

    fn field(&mut self, msg: &mut DynamicMessage, path: &str) -> PResult<()> {
        let desc = msg.descriptor();
        if self.tok.kind != TokenKind::Identifier {
            if self.looking_at("[") {
                // Extension or Any syntax: ModelConfig declares neither.
                let start = self.tok.span;
                self.advance()?;
                let name = self.text(self.tok);
                return self.error_at(
                    format!(
                        "Extension \"{name}\" is not defined or is not an extension of \"{}\".",
                        desc.full_name()
                    ),
                    ParseErrorKind::UnknownField,
                    start,
                );
            }
            return self.error(
                format!("Expected identifier, got: {}", self.text(self.tok)),
                ParseErrorKind::Syntax,
            );
        }
        let name_tok = self.advance()?;
        let name = self.text(name_tok);
        let Some(fd) = desc.get_field_by_name(name) else {
            return self.error_at(
                format!(
                    "Message type \"{}\" has no field named \"{name}\".",
                    desc.full_name()
                ),
                ParseErrorKind::UnknownField,
                name_tok.span,
            );
        };
        let fpath = join(path, name);
        let repeated = fd.is_list() || fd.is_map();
        if !repeated && msg.has_field(&fd) {
            return self.error_at(
                format!("Non-repeated field \"{name}\" is specified multiple times."),
                ParseErrorKind::Repeated,
                name_tok.span,
            );
        }
        if let Some(oneof) = fd.containing_oneof()
            && let Some(other) = oneof.fields().find(|f| msg.has_field(f))
        {
            {
                return self.error_at(
                    format!(
                        "Field \"{name}\" is specified along with field \"{}\", another member of oneof \"{}\" for message type \"{}\".",
                        other.name(),
                        oneof.name(),
                        desc.full_name()
                    ),
                    ParseErrorKind::Repeated,
                    name_tok.span,
                );
            }
        }
        let is_message = matches!(fd.kind(), Kind::Message(_));
        if is_message {
            self.try_consume(":")?;
        } else {
            self.consume(":")?;
        }
        let seen_before = !repeated && self.spans.iter().any(|(p, _)| *p == fpath);
        if seen_before {
            self.notes.push(ParseNote {
                path: fpath.clone(),
                span: name_tok.span,
                kind: NoteKind::DuplicateField,
            });
        }
        if repeated && self.try_consume("[")? {
            if !self.try_consume("]")? {
                loop {
                    self.field_value(msg, &fd, &fpath)?;
                    if self.try_consume("]")? {
                        break;
                    }
                    self.consume(",")?;
                }
            }
        } else {
            self.field_value(msg, &fd, &fpath)?;
        }
        let whole = name_tok
            .span
            .to(Span::new(self.prev_end(), self.prev_end()));
        if !seen_before && !self.spans.iter().any(|(p, _)| *p == fpath) {
            self.record(
                fpath.clone(),
                FieldSpan {
                    name: name_tok.span,
                    whole,
                },
            );
        } else if let Some(entry) = self.spans.iter_mut().find(|(p, _)| *p == fpath) {
            // Keep the first occurrence's name, extend to cover this one for repeated fields.
            if repeated && entry.1.whole.end < whole.end && entry.1.whole.start <= whole.start {
                entry.1.whole = entry.1.whole.to(whole);
            }
        }
        if self.try_consume(";")? {
        } else {
            self.try_consume(",")?;
        }
        Ok(())
    }

    /// End offset of the last consumed token.
    fn prev_end(&self) -> usize {
        self.last_end
    }

    fn field_value(
        &mut self,
        msg: &mut DynamicMessage,
        fd: &FieldDescriptor,
        fpath: &str,
    ) -> PResult<()> {
        let start = self.tok.span;
        if fd.is_map() {
            let Kind::Message(entry_desc) = fd.kind() else {
                unreachable!("map fields are messages")
            };
            let idx = msg.get_field(fd).as_map().map(|m| m.len()).unwrap_or(0);
            let tmp = format!("{fpath}{{{idx}}}");
            let first_span = self.spans.len();
            let entry = self.message_value(&entry_desc, &tmp)?;
            let key_fd = entry_desc.map_entry_key_field();
            let val_fd = entry_desc.map_entry_value_field();
            let key = entry
                .get_field(&key_fd)
                .into_owned()
                .into_map_key()
                .expect("map keys are scalar");
            let value = entry.get_field(&val_fd).into_owned();
            let keyed = format!("{fpath}[{}]", map_key_text(&key));
            // Fields inside the entry are addressed through the key: `parameters["k"].string_value`
            // for the value's fields; the entry's own `key` and scalar `value` are the entry itself.
            let mut renamed = Vec::new();
            for (p, s) in self.spans.drain(first_span..) {
                match p.strip_prefix(&tmp) {
                    Some(".key") | Some(".value") => {}
                    Some(rest) if rest.starts_with(".value.") => {
                        renamed.push((format!("{keyed}{}", &rest[".value".len()..]), s))
                    }
                    _ => renamed.push((p, s)),
                }
            }
            self.spans.extend(renamed);
            let span = FieldSpan {
                name: start,
                whole: start.to(Span::new(self.prev_end(), self.prev_end())),
            };
            let map = msg.get_field_mut(fd);
            let Value::Map(map) = map else {
                unreachable!("map field holds a map")
            };
            if map.insert(key, value).is_some() {
                self.notes.push(ParseNote {
                    path: keyed.clone(),
                    span: span.whole,
                    kind: NoteKind::DuplicateKey,
                });
                self.spans.retain(|(p, _)| *p != keyed);
            }
            self.record(keyed, span);
            return Ok(());
        }
        let (value, elem_path) = if let Kind::Message(sub) = fd.kind() {
            let elem_path = if fd.is_list() {
                let idx = msg.get_field(fd).as_list().map(|l| l.len()).unwrap_or(0);
                format!("{fpath}[{idx}]")
            } else {
                fpath.to_string()
            };
            let m = self.message_value(&sub, &elem_path)?;
            (Value::Message(m), elem_path)
        } else {
            let v = self.scalar(fd)?;
            let elem_path = if fd.is_list() {
                let idx = msg.get_field(fd).as_list().map(|l| l.len()).unwrap_or(0);
                format!("{fpath}[{idx}]")
            } else {
                fpath.to_string()
            };
            (v, elem_path)
        };
        let end = self.prev_end();
        if fd.is_list() {
            self.record(
                elem_path,
                FieldSpan {
                    name: start,
                    whole: start.to(Span::new(end, end)),
                },
            );
            match msg.get_field_mut(fd) {
                Value::List(l) => l.push(value),
                _ => unreachable!("repeated field holds a list"),
            }
        } else {
            msg.set_field(fd, value);
        }
        Ok(())
    }

    fn message_value(&mut self, desc: &MessageDescriptor, path: &str) -> PResult<DynamicMessage> {
        let close = if self.try_consume("<")? {
            ">"
        } else {
            self.consume("{")?;
            "}"
        };
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error("Message is too deep", ParseErrorKind::Syntax);
        }
        let mut m = DynamicMessage::new(desc.clone());
        while !self.looking_at(">") && !self.looking_at("}") {
            if self.tok.kind == TokenKind::End {
                return self.error("Expected identifier, got: ", ParseErrorKind::Syntax);
            }
            self.field(&mut m, path)?;
        }
        self.consume(close)?;
        self.depth -= 1;
        Ok(m)
    }

    fn scalar(&mut self, fd: &FieldDescriptor) -> PResult<Value> {
        Ok(match fd.kind() {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                Value::I32(self.signed(i32::MAX as u64)? as i32)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64(self.signed(i64::MAX as u64)?)
            }
            Kind::Uint32 | Kind::Fixed32 => Value::U32(self.unsigned(u32::MAX as u64)? as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(self.unsigned(u64::MAX)?),
            Kind::Float => Value::F32(self.double()? as f32),
            Kind::Double => Value::F64(self.double()?),
            Kind::Bool => Value::Bool(self.boolean(fd)?),
            Kind::String => {
                let start = self.tok.span;
                let bytes = self.string()?;
                match String::from_utf8(bytes) {
                    Ok(s) => Value::String(s),
                    Err(_) => {
                        return self.error_at(
                            format!(
                                "String field \"{}\" contains invalid UTF-8 data.",
                                fd.name()
                            ),
                            ParseErrorKind::Syntax,
                            start,
                        );
                    }
                }
            }
            Kind::Bytes => Value::Bytes(self.string()?.into()),
            Kind::Enum(e) => {
                let tok = self.tok;
                if tok.kind == TokenKind::Identifier {
                    self.advance()?;
                    let name = self.text(tok);
                    match e.get_value_by_name(name) {
                        Some(v) => Value::EnumNumber(v.number()),
                        None => {
                            return self.error_at(
                                format!(
                                    "Unknown enumeration value of \"{name}\" for field \"{}\".",
                                    fd.name()
                                ),
                                ParseErrorKind::UnknownEnum,
                                tok.span,
                            );
                        }
                    }
                } else if self.looking_at("-") || tok.kind == TokenKind::Integer {
                    // proto3 enums are open: any number in range is kept.
                    Value::EnumNumber(self.signed(i32::MAX as u64)? as i32)
                } else {
                    return self.error(
                        format!("Expected integer or identifier, got: {}", self.text(tok)),
                        ParseErrorKind::Syntax,
                    );
                }
            }
            Kind::Message(_) => unreachable!("messages are parsed by message_value"),
        })
    }

    fn signed(&mut self, max: u64) -> PResult<i64> {
        let negative = self.try_consume("-")?;
        let limit = if negative { max + 1 } else { max };
        let v = self.unsigned(limit)?;
        Ok(if negative {
            (v as i64).wrapping_neg()
        } else {
            v as i64
        })
    }

    fn unsigned(&mut self, max: u64) -> PResult<u64> {
        let tok = self.tok;
        if tok.kind != TokenKind::Integer {
            return self.error(
                format!("Expected integer, got: {}", self.text(tok)),
                ParseErrorKind::Syntax,
            );
        }
        let text = self.text(tok);
        match parse_integer(text, max) {
            Some(v) => {
                if text.len() > 1 && text.starts_with('0') && !text[1..].starts_with(['x', 'X']) {
                    self.notes.push(ParseNote {
                        path: String::new(),
                        span: tok.span,
                        kind: NoteKind::OctalLiteral,
                    });
                }
                self.advance()?;
                Ok(v)
            }
            None => self.error(
                format!("Integer out of range ({text})"),
                ParseErrorKind::Syntax,
            ),
        }
    }

    fn double(&mut self) -> PResult<f64> {
        let negative = self.try_consume("-")?;
        let tok = self.tok;
        let text = self.text(tok);
        let v = match tok.kind {
            TokenKind::Integer => {
                if text.len() > 1 && text.starts_with('0') {
                    return self.error(
                        format!("Expect a decimal number, got: {text}"),
                        ParseErrorKind::Syntax,
                    );
                }
                text.parse::<f64>().unwrap_or(f64::INFINITY)
            }
            TokenKind::Float => {
                let t = text.trim_end_matches(['f', 'F']);
                let t = if t.ends_with(['e', 'E', '-', '+']) {
                    t.trim_end_matches(['e', 'E', '-', '+'])
                } else {
                    t
                };
                t.parse::<f64>().unwrap_or(0.0)
            }
            TokenKind::Identifier => {
                let lower = text.to_ascii_lowercase();
                match lower.as_str() {
                    "inf" | "infinity" => f64::INFINITY,
                    "nan" => f64::NAN,
                    _ => {
                        return self.error(
                            format!("Expected double, got: {text}"),
                            ParseErrorKind::Syntax,
                        );
                    }
                }
            }
            _ => {
                return self.error(
                    format!("Expected double, got: {text}"),
                    ParseErrorKind::Syntax,
                );
            }
        };
        self.advance()?;
        Ok(if negative { -v } else { v })
    }

    fn boolean(&mut self, fd: &FieldDescriptor) -> PResult<bool> {
        let tok = self.tok;
        if tok.kind == TokenKind::Integer {
            return Ok(self.unsigned(1)? == 1);
        }
        if tok.kind != TokenKind::Identifier {
            return self.error(
                format!("Expected identifier, got: {}", self.text(tok)),
                ParseErrorKind::Syntax,
            );
        }
        let text = self.text(tok);
        let v = match text {
            "true" | "True" | "t" => true,
            "false" | "False" | "f" => false,
            _ => {
                return self.error(
                    format!(
                        "Invalid value for boolean field \"{}\". Value: \"{text}\".",
                        fd.name()
                    ),
                    ParseErrorKind::Syntax,
                );
            }
        };
        self.advance()?;
        Ok(v)
    }

    fn string(&mut self) -> PResult<Vec<u8>> {
        if self.tok.kind != TokenKind::String {
            return self.error(
                format!("Expected string, got: {}", self.text(self.tok)),
                ParseErrorKind::Syntax,
            );
        }
        let mut out = Vec::new();
        while self.tok.kind == TokenKind::String {
            let t = self.text(self.tok);
            out.extend(unescape(&t[1..t.len() - 1]));
            self.advance()?;
        }
        Ok(out)
    }
}

/// `io::Tokenizer::ParseInteger`: decimal, `0x` hex or leading-zero octal, at most `max`.
fn parse_integer(text: &str, max: u64) -> Option<u64> {
    let (digits, radix) = if let Some(h) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
        (h, 16)
    } else if text.len() > 1 && text.starts_with('0') {
        (&text[1..], 8)
    } else {
        (text, 10)
    };
    let v = u64::from_str_radix(digits, radix).ok()?;
    (v <= max).then_some(v)
}
