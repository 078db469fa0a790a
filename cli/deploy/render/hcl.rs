//! A small HCL writer: values, blocks and comments in order, strings quoted so that `${` and `%{`
//! stay literal. Terraform modules and Packer templates are written with it.

use std::fmt::Write as _;

use crate::deploy::render::checks::Skip;

/// An HCL value.
#[derive(Debug, Clone)]
pub enum V {
    S(String),
    N(i64),
    B(bool),
    /// A reference or expression, written as is (`aws_iam_role.task.arn`).
    E(String),
    L(Vec<V>),
    M(Vec<(String, V)>),
}

pub fn s(x: impl Into<String>) -> V {
    V::S(x.into())
}
pub fn e(x: impl Into<String>) -> V {
    V::E(x.into())
}

pub fn quote(x: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = x.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("$$"),
            '%' if chars.peek() == Some(&'{') => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn value(v: &V, indent: usize) -> String {
    let pad = "  ".repeat(indent + 1);
    let end = "  ".repeat(indent);
    match v {
        V::S(x) => quote(x),
        V::N(n) => n.to_string(),
        V::B(b) => b.to_string(),
        V::E(x) => x.clone(),
        V::L(items) if items.is_empty() => "[]".into(),
        V::L(items) => format!(
            "[\n{}\n{end}]",
            items
                .iter()
                .map(|i| format!("{pad}{},", value(i, indent + 1)))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        V::M(entries) => format!(
            "{{\n{}\n{end}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{pad}{} = {}", quote(k), value(v, indent + 1)))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// A block body: attributes and nested blocks, in order.
#[derive(Default)]
pub struct Body(Vec<(String, Item)>);

enum Item {
    Attr(V),
    Block(Vec<String>, Body),
    /// A `#` comment line (checkov reads its skips from them).
    Comment(String),
}

impl Body {
    pub fn a(mut self, k: &str, v: V) -> Self {
        self.0.push((k.into(), Item::Attr(v)));
        self
    }
    pub fn b(mut self, k: &str, body: Body) -> Self {
        self.0.push((k.into(), Item::Block(vec![], body)));
        self
    }
    /// A nested block with labels (`provisioner "shell" { ... }`).
    pub fn bl(mut self, k: &str, labels: &[&str], body: Body) -> Self {
        self.0.push((
            k.into(),
            Item::Block(labels.iter().map(|l| l.to_string()).collect(), body),
        ));
        self
    }
    /// A `#` comment line.
    pub fn comment(mut self, text: impl Into<String>) -> Self {
        self.0
            .push((String::new(), Item::Comment(format!(" {}", text.into()))));
        self
    }
    /// Says why the resource does not pass the scanner's `skips`.
    pub fn skip(mut self, skips: &[Skip]) -> Self {
        for sk in skips {
            self.0.push((
                String::new(),
                Item::Comment(format!("checkov:skip={}:{}", sk.id, sk.reason)),
            ));
        }
        self
    }
    pub fn write(&self, out: &mut String, indent: usize) {
        let pad = "  ".repeat(indent);
        for (k, item) in &self.0 {
            match item {
                Item::Attr(v) => {
                    let _ = writeln!(out, "{pad}{k} = {}", value(v, indent));
                }
                Item::Block(labels, body) => {
                    let labels: String = labels.iter().map(|l| format!(" {}", quote(l))).collect();
                    let _ = writeln!(out, "{pad}{k}{labels} {{");
                    body.write(out, indent + 1);
                    let _ = writeln!(out, "{pad}}}");
                }
                Item::Comment(text) => {
                    let _ = writeln!(out, "{pad}#{}", text.replace('\n', " "));
                }
            }
        }
    }
}

pub fn block(out: &mut String, kind: &str, labels: &[&str], body: Body) {
    let mut b = Body::default();
    b.0.push((
        kind.into(),
        Item::Block(labels.iter().map(|l| l.to_string()).collect(), body),
    ));
    b.write(out, 0);
    out.push('\n');
}
