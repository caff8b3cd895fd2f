//! A flow file's text and the diagnostics that point into it.
//!
//! Every problem found in a flow file becomes a [`Diagnostic`] with a byte
//! span; [`Diagnostics`] renders them all at once as `file:line:column`, the
//! offending line with a caret under it, and a hint saying what to do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The text of one flow file and where it came from.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// All the problems found in one flow file, reported together.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub source: SourceFile,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// `(line, column, message)` of each diagnostic, for tests and tools.
    pub fn positions(&self) -> Vec<(usize, usize, String)> {
        self.items
            .iter()
            .map(|d| {
                let (line, col) = self.source.line_col(d.span.start);
                (line, col, d.message.clone())
            })
            .collect()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.source.path.display();
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (line, col) = self.source.line_col(d.span.start);
            writeln!(f, "error: {}", d.message)?;
            writeln!(f, "  --> {path}:{line}:{col}")?;
            let text = self.source.line_text(line);
            let gutter = line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{line} | {text}")?;
            let span_chars = self.source.text[floor_char_boundary(&self.source.text, d.span.start)
                ..floor_char_boundary(&self.source.text, d.span.end.max(d.span.start))]
                .lines()
                .next()
                .map_or(1, |s| s.chars().count().max(1));
            let width = span_chars.min(text.chars().count().saturating_sub(col - 1).max(1));
            write!(
                f,
                "{:gutter$} | {:pad$}{}",
                "",
                "",
                "^".repeat(width),
                pad = col - 1
            )?;
            if let Some(hint) = &d.hint {
                write!(f, "\n{:gutter$} = hint: {hint}", "")?;
            }
            if i + 1 == self.items.len() {
                writeln!(f)?;
            }
        }
        let n = self.items.len();
        write!(
            f,
            "{path}: {n} problem{} found; nothing was run",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        let src = SourceFile::new("f.toml", "a = 1\nb = \"–x\"\n");
        let offset = src.text.find('x').unwrap_or(0);
        assert_eq!(src.line_col(offset), (2, 7));
        assert_eq!(src.line_col(0), (1, 1));
    }

    #[test]
    fn renders_location_caret_and_hint() {
        let src = SourceFile::new("flow.toml", "name = \"x\"\nbad = 1\n");
        let diags = Diagnostics {
            source: src,
            items: vec![Diagnostic::new(11..14, "unknown key `bad`").hint("remove it")],
        };
        let text = diags.to_string();
        assert!(text.contains("flow.toml:2:1"), "{text}");
        assert!(text.contains("2 | bad = 1"), "{text}");
        assert!(text.contains("  | ^^^"), "{text}");
        assert!(text.contains("hint: remove it"), "{text}");
        assert!(text.ends_with("1 problem found; nothing was run"), "{text}");
    }
}
