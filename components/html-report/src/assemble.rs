//! The report made in one pass over its rows: each row is written into
//! the page's tables as it comes, counted by status, and offered to the
//! mail, which keeps only the few it can show. What is held at the end is
//! the tables' text and a bounded number of rows, whatever the tenant's
//! size.

use std::collections::BTreeMap;

use crate::mail::{self, Keeper};
use crate::page;
use crate::sections::{Row, Sink};

/// The section being made.
struct Open {
    title: &'static str,
    note: Option<String>,
    keeper: Keeper,
}

/// The page's tables, the mail's sections and the counts, as the rows
/// come.
pub struct Assembler {
    tables: String,
    mail_rows: usize,
    open: Option<Open>,
    sections: Vec<mail::Section>,
    by_status: BTreeMap<&'static str, usize>,
}

/// What the rows came to.
pub struct Assembled {
    /// The page's tables (sections without rows left out).
    pub tables: String,
    /// Every section, with the rows the mail may show.
    pub sections: Vec<mail::Section>,
    /// How many rows had each status.
    pub by_status: BTreeMap<&'static str, usize>,
}

impl Assembled {
    /// How many rows had `status`.
    pub fn count(&self, status: &str) -> usize {
        self.by_status.get(status).copied().unwrap_or(0)
    }

    /// Whether any section has a row.
    pub fn anyone(&self) -> bool {
        self.sections.iter().any(|s| s.total > 0)
    }
}

impl Assembler {
    /// The mail will show at most `mail_rows` rows a section.
    pub fn new(mail_rows: usize) -> Assembler {
        Assembler {
            tables: String::new(),
            mail_rows,
            open: None,
            sections: Vec::new(),
            by_status: BTreeMap::new(),
        }
    }

    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            let section = open.keeper.section(open.title, open.note);
            if section.total > 0 {
                self.tables.push_str(page::TABLE_END);
            }
            self.sections.push(section);
        }
    }

    pub fn finish(mut self) -> Assembled {
        self.close();
        Assembled {
            tables: self.tables,
            sections: self.sections,
            by_status: self.by_status,
        }
    }
}

impl Sink for Assembler {
    fn section(&mut self, title: &'static str, note: Option<String>) {
        self.close();
        self.open = Some(Open {
            title,
            note,
            keeper: Keeper::new(self.mail_rows),
        });
    }

    fn row(&mut self, row: Row) {
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if open.keeper.is_empty() {
            // The heading only above a section that has a row.
            self.tables
                .push_str(&page::section_start(open.title, open.note.as_deref()));
        }
        page::write_row(&mut self.tables, &row, str::to_string);
        *self.by_status.entry(row.status).or_default() += 1;
        open.keeper.offer(&row);
    }
}
