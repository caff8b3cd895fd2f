//! A flow file's text and the diagnostics that point into it.
//!
//! Every problem found in a flow file becomes a [`Diagnostic`] with a byte
//! span; [`Diagnostics`] renders them all at once as `file:line:column`, the
//! offending line with a caret under it, and a hint saying what to do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::redact::Redactor;

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

/// The part of a source line shown under a diagnostic, and where its
/// caret goes. A line longer than [`Excerpt::WHOLE`] (a long value in a
/// flow file) is cut to [`Excerpt::WINDOW`] characters around the column,
/// marked with `…` where it was cut: the whole line says nothing more, and
/// a caret padded by tens of thousands of spaces says less.
#[derive(Debug, PartialEq, Eq)]
struct Excerpt {
    text: String,
    /// Characters before the caret.
    pad: usize,
    /// Carets: the span's first line, within what is shown (at least one).
    width: usize,
}

impl Excerpt {
    /// The longest line shown whole (a long inline table of `with` is).
    const WHOLE: usize = 1_000;
    /// Characters shown of a longer line…
    const WINDOW: usize = 240;
    /// …of them before the column.
    const BEFORE: usize = 80;

    /// `line` with a caret at 1-based character column `col`, `span`
    /// characters wide.
    fn of(line: &str, col: usize, span: usize) -> Self {
        let at = col.saturating_sub(1);
        let len = line.chars().count();
        let (start, end) = if len <= Self::WHOLE {
            (0, len)
        } else {
            let start = at.saturating_sub(Self::BEFORE).min(len - Self::WINDOW);
            (start, start + Self::WINDOW)
        };
        let mut text: String = line.chars().skip(start).take(end - start).collect();
        let mut pad = at.saturating_sub(start);
        if start > 0 {
            text.insert(0, '…');
            pad += 1;
        }
        if end < len {
            text.push('…');
        }
        let room = end.saturating_sub(at.max(start)).max(1);
        Self {
            text,
            pad,
            width: span.min(room).max(1),
        }
    }
}

/// A source line as a problem quotes it: its secrets redacted before it
/// is cut to a window (a cut never leaves part of one), the column and
/// the span's width moved with the text before and under them.
struct Quoted {
    line: String,
    col: usize,
    span_chars: usize,
}

impl Quoted {
    fn of(line: &str, col: usize, spanned: &str, redactor: &Redactor) -> Self {
        let redacted = redactor.redact(line);
        let width = |text: &str| text.chars().count().max(1);
        if redacted == line {
            return Self {
                line: redacted,
                col,
                span_chars: width(spanned),
            };
        }
        let before: String = line.chars().take(col.saturating_sub(1)).collect();
        Self {
            col: redactor.redact(&before).chars().count() + 1,
            span_chars: width(&redactor.redact(spanned)),
            line: redacted,
        }
    }
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
    /// The flow's secrets, once bound: a line shown under a problem may
    /// hold one (pasted into the flow file), and is shown redacted.
    pub redactor: Redactor,
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
            writeln!(f, "error: {}", one_line(&d.message))?;
            writeln!(f, "  --> {path}:{line}:{col}")?;
            let gutter = line.to_string().len();
            let spanned = self.source.text[floor_char_boundary(&self.source.text, d.span.start)
                ..floor_char_boundary(&self.source.text, d.span.end.max(d.span.start))]
                .lines()
                .next()
                .unwrap_or("");
            let quoted = Quoted::of(self.source.line_text(line), col, spanned, &self.redactor);
            let shown = Excerpt::of(&quoted.line, quoted.col, quoted.span_chars);
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{line} | {}", shown.text)?;
            write!(
                f,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(shown.pad),
                "^".repeat(shown.width)
            )?;
            if let Some(hint) = &d.hint {
                write!(f, "\n{:gutter$} = hint: {}", "", one_line(hint))?;
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

/// A message or hint on one line: it may quote a value (an environment
/// variable's, a `--param`) whose line break would fake a line of the
/// report; control characters are written out (`\n`).
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.into()
}

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
            redactor: Redactor::default(),
        };
        let text = diags.to_string();
        assert!(text.contains("flow.toml:2:1"), "{text}");
        assert!(text.contains("2 | bad = 1"), "{text}");
        assert!(text.contains("  | ^^^"), "{text}");
        assert!(text.contains("hint: remove it"), "{text}");
        assert!(text.ends_with("1 problem found; nothing was run"), "{text}");
    }

    /// A value quoted in a message cannot fake a line of the report.
    #[test]
    fn a_line_break_in_a_message_is_written_out() {
        let src = SourceFile::new("flow.toml", "name = \"x\"\n");
        let diags = Diagnostics {
            source: src,
            items: vec![
                Diagnostic::new(0..4, "`A` is \"x\nerror: fake\"").hint("set `A`\r\u{1b}[2K"),
            ],
            redactor: Redactor::default(),
        };
        let text = diags.to_string();
        assert!(text.contains("error: `A` is \"x\\nerror: fake\""), "{text}");
        assert!(text.contains("hint: set `A`\\r\\u{1b}[2K"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("error:")).count(), 1);
    }

    /// A secret pasted into the flow file is not shown with the line a
    /// problem quotes; the caret still sits under what it points at.
    #[test]
    fn a_secret_on_the_quoted_line_is_redacted() {
        let src = SourceFile::new(
            "flow.toml",
            "name = \"x\"\nwith = { id = \"hunter2-secret\", bogus = 1 }\n",
        );
        let start = src.text.find("bogus").unwrap_or(0);
        let diags = Diagnostics {
            source: src,
            items: vec![Diagnostic::new(start..start + 5, "unknown key `bogus`")],
            redactor: Redactor::new(["hunter2-secret".to_string()]),
        };
        let text = diags.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("2 | with = { id = \"[redacted]\", bogus = 1 }"),
            "{text}"
        );
        let shown = text
            .lines()
            .find(|l| l.starts_with("2 | "))
            .unwrap_or_default();
        let caret = text.lines().find(|l| l.contains('^')).unwrap_or_default();
        assert_eq!(caret.find('^'), shown.find("bogus"), "{text}");
    }

    /// A secret on a line long enough to be cut is redacted before the
    /// cut, so no part of it is left at the `…`; a span over it is as
    /// wide as `[redacted]`, not as the secret.
    #[test]
    fn a_secret_on_a_long_line_is_redacted_before_the_cut() {
        let secret = "s3cr3t-".repeat(30);
        let line = format!("x = \"{}{secret}\", bad = 1", "a".repeat(1_100));
        let src = SourceFile::new("f.toml", format!("name = \"x\"\n{line}\n"));
        let start = src.text.find(&secret).unwrap_or(0);
        let redactor = Redactor::new([secret.clone()]);
        let diags = Diagnostics {
            source: src.clone(),
            items: vec![Diagnostic::new(
                start..start + secret.len(),
                "a secret here",
            )],
            redactor: redactor.clone(),
        };
        // Where `what` is in `line`, in characters (a cut line starts
        // with a `…`), and the quoted line and the caret line of `diags`.
        let column = |line: &str, what: &str| line.find(what).map(|at| line[..at].chars().count());
        let quoted = |diags: &Diagnostics| {
            let text = diags.to_string();
            assert!(!text.contains("s3cr3t"), "{text}");
            let line = |starts: &dyn Fn(&str) -> bool| {
                text.lines()
                    .find(|l| starts(l))
                    .unwrap_or_default()
                    .to_string()
            };
            (line(&|l| l.starts_with("2 | ")), line(&|l| l.contains('^')))
        };
        let (shown, caret) = quoted(&diags);
        assert_eq!(column(&caret, "^"), column(&shown, "[redacted]"), "{shown}");
        assert_eq!(
            caret.trim_start_matches([' ', '|']).len(),
            "[redacted]".len()
        );
        // Past the secret, the caret still sits under its word.
        let bad = src.text.find("bad").unwrap_or(0);
        let diags = Diagnostics {
            source: src,
            items: vec![Diagnostic::new(bad..bad + 3, "unknown key `bad`")],
            redactor,
        };
        let (shown, caret) = quoted(&diags);
        assert_eq!(column(&caret, "^"), column(&shown, "bad"), "{shown}");
    }

    #[test]
    fn a_problem_far_along_a_long_line_shows_a_window_of_it() {
        // A value of 70,000 characters, then the problem: the caret once
        // needed padding past what `format!` takes, and panicked.
        let line = format!("x = \"{}\" junk", "a".repeat(70_000));
        let src = SourceFile::new("long.toml", format!("name = \"x\"\n{line}\n"));
        let start = src.text.find("junk").unwrap_or(0);
        let diags = Diagnostics {
            source: src,
            items: vec![Diagnostic::new(start..start + 4, "expected a newline")],
            redactor: Redactor::default(),
        };
        let text = diags.to_string();
        assert!(text.contains("long.toml:2:70008"), "{text}");
        let shown: Vec<&str> = text.lines().filter(|l| l.starts_with("2 | ")).collect();
        assert_eq!(shown.len(), 1, "{text}");
        let shown = shown[0].trim_start_matches("2 | ");
        assert!(
            shown.starts_with('…') && shown.ends_with("\" junk"),
            "{shown}"
        );
        assert!(shown.chars().count() <= Excerpt::WINDOW + 1, "{shown}");
        // The caret sits under `junk`, character for character.
        let caret = text.lines().find(|l| l.contains('^')).unwrap_or_default();
        let caret = caret.trim_start_matches("  | ");
        let under: String = shown.chars().skip(caret.find('^').unwrap_or(0)).collect();
        assert_eq!((under.as_str(), caret.trim()), ("junk", "^^^^"), "{text}");
    }

    #[test]
    fn a_long_line_is_cut_around_the_column_on_both_sides() {
        let line = "b".repeat(Excerpt::WHOLE + 1);
        assert_eq!(Excerpt::of(&line[1..], 900, 1).text, line[1..]);
        let middle = Excerpt::of(&line, 500, 3);
        assert_eq!(middle.text.chars().count(), Excerpt::WINDOW + 2);
        assert!(middle.text.starts_with('…') && middle.text.ends_with('…'));
        assert_eq!((middle.pad, middle.width), (Excerpt::BEFORE + 1, 3));
        let early = Excerpt::of(&line, 3, 5);
        assert!(!early.text.starts_with('…') && early.text.ends_with('…'));
        assert_eq!((early.pad, early.width), (2, 5));
        let short = Excerpt::of("a = 1", 5, 9);
        assert_eq!(
            (short.text.as_str(), short.pad, short.width),
            ("a = 1", 4, 1)
        );
    }
}
