//! Output: one line per item, as text or as one JSON object per line, on
//! stdout; a fatal error as one line on stderr, in the same form. JSON
//! field names are stable (documented in docs/DUMP.md).

use std::fmt::Write as _;
use std::io::{self, Write as _};

use crate::time::rfc3339;

/// A value of an output field.
pub enum Value<'a> {
    Str(&'a str),
    Num(i128),
    Bool(bool),
    Bytes(&'a [u8]),
    Pairs(Vec<(&'a str, &'a [u8])>),
    /// Milliseconds since the Unix epoch: printed as the number, followed
    /// by a `<name>_rfc3339` field with the same instant in RFC 3339.
    Millis(i64),
    Null,
}

/// How values are previewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preview {
    /// UTF-8, with invalid bytes replaced.
    Utf8,
    /// Lowercase hex.
    Hex,
    /// Omitted.
    None,
}

pub struct Out {
    pub json: bool,
    pub preview: Preview,
    pub max_bytes: usize,
}

impl Out {
    /// Prints one item: `kind` then its fields. Fails when stdout does
    /// (a closed pipe included), so that the dump stops.
    pub fn item(&self, kind: &str, fields: &[(&str, Value<'_>)]) -> io::Result<()> {
        writeln!(io::stdout().lock(), "{}", self.line(kind, fields))
    }

    /// Prints a fatal error on stderr: `logbus-dump: <path>: <error>`, or
    /// an `error` item in JSON mode. A closed stderr is ignored: there is
    /// nowhere left to report it.
    pub fn error(&self, path: &str, error: &str) {
        let line = match self.json {
            true => self.json_line(
                "error",
                &[("path", Value::Str(path)), ("error", Value::Str(error))],
            ),
            false => format!("logbus-dump: {path}: {error}"),
        };
        let _ = writeln!(io::stderr().lock(), "{line}");
    }

    fn line(&self, kind: &str, fields: &[(&str, Value<'_>)]) -> String {
        match self.json {
            true => self.json_line(kind, fields),
            false => self.text_line(kind, fields),
        }
    }

    fn preview(&self, bytes: &[u8]) -> String {
        let shown = &bytes[..bytes.len().min(self.max_bytes)];
        let more = if shown.len() < bytes.len() { "…" } else { "" };
        match self.preview {
            Preview::Utf8 => format!("{}{more}", String::from_utf8_lossy(shown)),
            Preview::Hex => format!(
                "{}{more}",
                shown.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            Preview::None => String::new(),
        }
    }

    fn text_line(&self, kind: &str, fields: &[(&str, Value<'_>)]) -> String {
        let mut line = kind.to_owned();
        for (name, value) in fields {
            let text = match value {
                Value::Str(s) => s.to_string(),
                Value::Num(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Bytes(b) if self.preview == Preview::None => continue,
                Value::Bytes(b) => format!("{:?}", self.preview(b)),
                Value::Pairs(pairs) => {
                    let shown: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| format!("{k}={:?}", self.preview(v)))
                        .collect();
                    format!("[{}]", shown.join(", "))
                }
                Value::Millis(ms) => match rfc3339(*ms) {
                    Some(time) => format!("{ms} {name}_rfc3339={time}"),
                    None => ms.to_string(),
                },
                Value::Null => continue,
            };
            let _ = write!(line, " {name}={text}");
        }
        line
    }

    fn json_line(&self, kind: &str, fields: &[(&str, Value<'_>)]) -> String {
        let mut line = format!("{{\"type\":{}", json_string(kind));
        for (name, value) in fields {
            let json = match value {
                Value::Str(s) => json_string(s),
                Value::Num(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Bytes(_) if self.preview == Preview::None => continue,
                Value::Bytes(b) => json_string(&self.preview(b)),
                Value::Pairs(pairs) => {
                    let items: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| format!("[{},{}]", json_string(k), json_string(&self.preview(v))))
                        .collect();
                    format!("[{}]", items.join(","))
                }
                Value::Millis(ms) => {
                    let time = rfc3339(*ms).map_or_else(|| "null".to_owned(), |t| json_string(&t));
                    format!("{ms},{}:{time}", json_string(&format!("{name}_rfc3339")))
                }
                Value::Null => "null".to_owned(),
            };
            let _ = write!(line, ",{}:{json}", json_string(name));
        }
        line.push('}');
        line
    }
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
