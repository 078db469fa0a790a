//! A protobuf text-format parser with the semantics of protobuf's C++ `TextFormat::Parser` (the one
//! Triton uses to read `config.pbtxt`), filling a [`prost_reflect::DynamicMessage`] from a descriptor
//! and keeping the source span of every field so that later diagnostics can point at `line:col`.

mod lexer;
mod parser;

pub use parser::parse;

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Span {
    /// The first byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The bytes `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// From this span's start to `other`'s end.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether it covers nothing.
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
    /// The field's name.
    pub name: Span,
    /// The field with its value.
    pub whole: Span,
}

/// A parse failure, with Triton's (protobuf's) message text and where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What is wrong, in protobuf's text-format parser's words where it has them.
    pub message: String,
    /// Where.
    pub span: Span,
    /// Which class of problem this is, for the rule catalogue.
    pub kind: ParseErrorKind,
}

/// Which kind of problem a parse error is.
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
    /// The field's path.
    pub path: String,
    /// Where.
    pub span: Span,
    /// What was noticed.
    pub kind: NoteKind,
}

/// Things Triton accepts without a word that are likely mistakes.
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
    /// The message read.
    pub message: prost_reflect::DynamicMessage,
    /// Where each field is, by its path (`input[0].dims`).
    pub spans: std::collections::HashMap<String, FieldSpan>,
    /// What the parser noticed that Triton accepts silently.
    pub notes: Vec<ParseNote>,
}

impl Parsed {
    /// Where the field at `path` is.
    pub fn span(&self, path: &str) -> Option<FieldSpan> {
        self.spans.get(path).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triton::model_config;

    fn err(src: &str) -> ParseError {
        model_config::parse(src).expect_err("should fail")
    }

    fn ok(src: &str) -> Parsed {
        model_config::parse(src).expect("should parse").source
    }

    #[test]
    fn every_list_and_separator_form_reads_the_same_values() {
        let forms = [
            "input [ { name: \"a\" dims: [1, 2] } , { name: \"b\" } ]",
            "input { name: \"a\" dims: 1 dims: 2 } input < name: 'b' >",
            "input: [ { name: \"a\", dims: [1], dims: 2; } ]; input { name: \"b\" },",
            "# comment\ninput {name:\"a\"dims:[ 0x1 , 02 ]}input{name:\"b\"}",
        ];
        let want = ok(forms[0]).message;
        for f in &forms[1..] {
            assert_eq!(ok(f).message, want, "{f}");
        }
    }

    #[test]
    fn spans_point_at_fields_and_list_elements() {
        let src = "name: \"m\"\ninput [\n  { name: \"x\" dims: [ 3, -1 ] }\n]\nparameters { key: \"k\" value { string_value: \"v\" } }\n";
        let p = ok(src);
        let at = |path: &str| {
            let s = p.span(path).unwrap_or_else(|| panic!("no span for {path}"));
            line_col(src, s.whole.start)
        };
        assert_eq!(at("name"), (1, 1));
        assert_eq!(at("input[0]"), (3, 3));
        assert_eq!(at("input[0].name"), (3, 5));
        assert_eq!(at("input[0].dims[1]"), (3, 26));
        assert_eq!(at("parameters[\"k\"].string_value"), (5, 31));
        let dims = p.span("input[0].dims").unwrap().whole;
        assert_eq!(&src[dims.start..dims.end], "dims: [ 3, -1 ]");
    }

    #[test]
    fn errors_carry_protobuf_messages_and_positions() {
        let e = err("name: \"a\"\nmax_batch: 3");
        assert_eq!(
            e.message,
            "Message type \"inference.ModelConfig\" has no field named \"max_batch\"."
        );
        assert_eq!(e.kind, ParseErrorKind::UnknownField);
        assert_eq!(line_col("name: \"a\"\nmax_batch: 3", e.span.start), (2, 1));

        let e = err("input { data_type: TYPE_FLOAT }");
        assert_eq!(
            e.message,
            "Unknown enumeration value of \"TYPE_FLOAT\" for field \"data_type\"."
        );
        assert_eq!(e.kind, ParseErrorKind::UnknownEnum);

        let e = err("max_batch_size: 8 max_batch_size: 4");
        assert_eq!(
            e.message,
            "Non-repeated field \"max_batch_size\" is specified multiple times."
        );
        assert_eq!(e.kind, ParseErrorKind::Repeated);

        let e = err("dynamic_batching {} sequence_batching {}");
        assert!(e.message.starts_with("Field \"sequence_batching\" is specified along with field \"dynamic_batching\", another member of oneof \"scheduling_choice\""));

        assert_eq!(
            err("max_batch_size: ${mbs}").kind,
            ParseErrorKind::Placeholder
        );
        assert_eq!(
            err("input { dims: [1, 2, ] }").message,
            "Expected integer, got: ]"
        );
        assert_eq!(
            err("max_batch_size 8").message,
            "Expected \":\", found \"8\"."
        );
        assert_eq!(
            err("response_cache { enable: yes }").message,
            "Invalid value for boolean field \"enable\". Value: \"yes\"."
        );
        assert_eq!(
            err("max_batch_size: 2147483648").message,
            "Integer out of range (2147483648)"
        );
        assert_eq!(
            err("name: \"a\nb\"").message,
            "String literals cannot cross line boundaries."
        );
        assert_eq!(
            err("\u{feff}name: \"a\"").message,
            "Interpreting non ascii codepoint U+FEFF."
        );
        assert_eq!(
            err("name: \u{201c}a\u{201d}").message,
            "Interpreting non ascii codepoint U+201C."
        );
        assert_eq!(
            err("max_batch_size: 09").message,
            "Numbers starting with leading zero must be in octal."
        );
        assert_eq!(
            err("version_policy { latest { num_versions: -1 } }").message,
            "Expected integer, got: -"
        );
    }

    #[test]
    fn accepted_oddities_are_noted() {
        let p = ok(
            "max_batch_size: 0 max_batch_size: 010\nparameters { key: \"a\" value {} } parameters { key: \"a\" value {} }",
        );
        let kinds: Vec<NoteKind> = p.notes.iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                NoteKind::DuplicateField,
                NoteKind::OctalLiteral,
                NoteKind::DuplicateKey
            ]
        );
        let cfg = model_config::parse("max_batch_size: 0 max_batch_size: 010")
            .unwrap()
            .config;
        assert_eq!(cfg.max_batch_size, 8);
    }

    #[test]
    fn strings_unescape_like_protobuf() {
        let cfg = model_config::parse(r#"name: "a\tb\x41\101\u00e9" 'c\'d'"#)
            .unwrap()
            .config;
        assert_eq!(cfg.name, "a\tbAAé".to_string() + "c'd");
        assert!(
            model_config::parse(r#"name: "\xff""#).is_err(),
            "string fields must be UTF-8"
        );
        assert_eq!(
            err(r#"name: "\q""#).message,
            "Invalid escape sequence in string literal."
        );
    }

    #[test]
    fn floats_bools_and_enum_numbers() {
        let src = "response_cache { enable: t } input { data_type: 11 } model_metrics { metric_control { histogram_options { buckets: [ 1, 2.5f, -inf, 1e2 ] } } }";
        let cfg = model_config::parse(src).unwrap().config;
        assert!(cfg.response_cache.unwrap().enable);
        assert_eq!(cfg.input[0].data_type, 11);
        use crate::triton::model_config::inference::model_metrics::metric_control::MetricOptions;
        let Some(MetricOptions::HistogramOptions(h)) =
            &cfg.model_metrics.unwrap().metric_control[0].metric_options
        else {
            panic!("histogram options")
        };
        assert_eq!(h.buckets, vec![1.0, 2.5, f64::NEG_INFINITY, 100.0]);
    }

    #[test]
    fn deep_or_endless_nesting_fails_cleanly() {
        // ModelConfig has no recursive message, so nesting is bounded by the schema itself.
        let src = "optimization { ".repeat(10_000);
        assert!(
            err(&src)
                .message
                .contains("has no field named \"optimization\"")
        );
        let src = "{".repeat(100_000);
        assert_eq!(err(&src).message, "Expected identifier, got: {");
        assert!(model_config::parse("optimization { cuda { graph_spec { graph_lower_bound { input { key: \"a\" value { dim: 1 } } } } } }").is_ok());
    }
}
