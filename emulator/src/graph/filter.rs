//! OData `$filter` as Graph's directory reads it: `eq` and `ne`
//! comparisons, `in (…)`, `startswith` and `endswith`, joined by `and`,
//! `or`, `not` and parentheses. Keywords and property names are read
//! without regard to case, and strings compare without case, as the
//! directory compares them. Some operators (`ne`, `not`, `endswith`) are
//! advanced queries in Graph: [`Expr::advanced_operator`] names the first
//! one a filter uses, so the caller can ask for the advanced query
//! parameters.

use serde_json::Value;

/// Clauses an `or` or an `in` may join in a filter that is not an
/// advanced query ("the request is limited to 15 expressions in the filter
/// clause by default": Microsoft Graph's `$filter` documentation).
pub const MAX_OR_CLAUSES: usize = 15;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `property eq value`, or `ne` when `negated`.
    Equals {
        property: String,
        value: Literal,
        negated: bool,
    },
    /// `property in ('a', 'b')`
    In {
        property: String,
        values: Vec<Literal>,
    },
    /// `startswith(property, 'text')`, or `endswith` when `at_end`.
    Affix {
        property: String,
        text: String,
        at_end: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Bool(bool),
    Number(f64),
    Null,
}

/// Why a filter could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

/// A filter's tokens.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(f64),
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ',' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Comma,
                });
            }
            '\'' => {
                chars.next();
                let mut literal = String::new();
                loop {
                    match chars.next() {
                        // A doubled quote is a quote; a single one ends the string.
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            literal.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => literal.push(c),
                        None => return Err(SyntaxError("a string is not closed".into())),
                    }
                }
                out.push(Token::Text(literal));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut number = String::new();
                while let Some(&c) = chars
                    .peek()
                    .filter(|c| c.is_ascii_digit() || "-.".contains(**c))
                {
                    number.push(c);
                    chars.next();
                }
                let n = number
                    .parse()
                    .map_err(|_| SyntaxError(format!("'{number}' is not a number")))?;
                out.push(Token::Number(n));
            }
            c if c.is_alphanumeric() || "_@$/.".contains(c) => {
                let mut word = String::new();
                while let Some(&c) = chars
                    .peek()
                    .filter(|c| c.is_alphanumeric() || "_@$/.".contains(**c))
                {
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
            other => return Err(SyntaxError(format!("unexpected '{other}'"))),
        }
    }
    Ok(out)
}

/// Reads a `$filter` value.
pub fn parse(text: &str) -> Result<Expr, SyntaxError> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    let expr = parser.or()?;
    match parser.tokens.get(parser.at) {
        None => Ok(expr),
        Some(t) => Err(SyntaxError(format!("unexpected {t:?} after the end"))),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, word: &str) -> bool {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(word) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, token: Token) -> Result<(), SyntaxError> {
        match self.next() {
            Some(t) if t == token => Ok(()),
            other => Err(SyntaxError(format!("expected {token:?}, found {other:?}"))),
        }
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, SyntaxError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                self.expect(Token::Close)?;
                Ok(inner)
            }
            Some(Token::Word(w)) if self.tokens.get(self.at) == Some(&Token::Open) => {
                self.function(&w)
            }
            Some(Token::Word(property)) => self.comparison(property),
            other => Err(SyntaxError(format!("expected a clause, found {other:?}"))),
        }
    }

    /// `startswith(property, 'text')` or `endswith(…)`.
    fn function(&mut self, name: &str) -> Result<Expr, SyntaxError> {
        let at_end = match name.to_ascii_lowercase().as_str() {
            "startswith" => false,
            "endswith" => true,
            _ => return Err(SyntaxError(format!("unknown function '{name}'"))),
        };
        self.expect(Token::Open)?;
        let Some(Token::Word(property)) = self.next() else {
            return Err(SyntaxError(format!("{name} needs a property first")));
        };
        self.expect(Token::Comma)?;
        let Some(Token::Text(text)) = self.next() else {
            return Err(SyntaxError(format!("{name} needs a string second")));
        };
        self.expect(Token::Close)?;
        Ok(Expr::Affix {
            property,
            text,
            at_end,
        })
    }

    fn comparison(&mut self, property: String) -> Result<Expr, SyntaxError> {
        let Some(Token::Word(op)) = self.next() else {
            return Err(SyntaxError(format!(
                "expected an operator after {property}"
            )));
        };
        match op.to_ascii_lowercase().as_str() {
            "eq" | "ne" => Ok(Expr::Equals {
                property,
                value: self.literal()?,
                negated: op.eq_ignore_ascii_case("ne"),
            }),
            "in" => {
                self.expect(Token::Open)?;
                let mut values = vec![self.literal()?];
                while self.tokens.get(self.at) == Some(&Token::Comma) {
                    self.at += 1;
                    values.push(self.literal()?);
                }
                self.expect(Token::Close)?;
                Ok(Expr::In { property, values })
            }
            _ => Err(SyntaxError(format!("unsupported operator '{op}'"))),
        }
    }

    fn literal(&mut self) -> Result<Literal, SyntaxError> {
        match self.next() {
            Some(Token::Text(t)) => Ok(Literal::Text(t)),
            Some(Token::Number(n)) => Ok(Literal::Number(n)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            other => Err(SyntaxError(format!("expected a value, found {other:?}"))),
        }
    }
}

impl Literal {
    fn matches(&self, value: &Value) -> bool {
        match (self, value) {
            (Literal::Null, v) => v.is_null(),
            (Literal::Text(t), Value::String(s)) => s.to_lowercase() == t.to_lowercase(),
            (Literal::Bool(b), Value::Bool(v)) => b == v,
            (Literal::Number(n), Value::Number(v)) => v.as_f64() == Some(*n),
            _ => false,
        }
    }
}

impl Expr {
    /// Every property the filter names.
    pub fn properties(&self) -> Vec<&str> {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => {
                let mut all = a.properties();
                all.extend(b.properties());
                all
            }
            Expr::Not(e) => e.properties(),
            Expr::Equals { property, .. }
            | Expr::In { property, .. }
            | Expr::Affix { property, .. } => vec![property.as_str()],
        }
    }

    /// How many clauses an `or` (or an `in`, which Graph reads as one)
    /// joins at most in this filter: Graph refuses more than
    /// [`MAX_OR_CLAUSES`] of them unless it is an advanced query.
    pub fn widest_or(&self) -> usize {
        match self {
            Expr::Or(a, b) => {
                let here = self.or_clauses();
                here.max(a.widest_or()).max(b.widest_or())
            }
            Expr::And(a, b) => a.widest_or().max(b.widest_or()),
            Expr::Not(e) => e.widest_or(),
            Expr::In { values, .. } => values.len(),
            Expr::Equals { .. } | Expr::Affix { .. } => 1,
        }
    }

    /// The clauses of this `or` chain (`a or b or c` is three).
    fn or_clauses(&self) -> usize {
        match self {
            Expr::Or(a, b) => a.or_clauses() + b.or_clauses(),
            _ => 1,
        }
    }

    /// The first operator that Graph serves only as an advanced query.
    pub fn advanced_operator(&self) -> Option<&'static str> {
        match self {
            Expr::Or(a, b) | Expr::And(a, b) => a.advanced_operator().or(b.advanced_operator()),
            Expr::Not(_) => Some("not"),
            Expr::Equals { negated: true, .. } => Some("ne"),
            Expr::Affix { at_end: true, .. } => Some("endswith"),
            Expr::Equals { .. } | Expr::In { .. } | Expr::Affix { .. } => None,
        }
    }

    /// Whether an object matches; `value` gives a property's value, `Null`
    /// for one the object's type does not have.
    pub fn matches(&self, value: &dyn Fn(&str) -> Value) -> bool {
        match self {
            Expr::Or(a, b) => a.matches(value) || b.matches(value),
            Expr::And(a, b) => a.matches(value) && b.matches(value),
            Expr::Not(e) => !e.matches(value),
            Expr::Equals {
                property,
                value: literal,
                negated,
            } => literal.matches(&value(property)) != *negated,
            Expr::In { property, values } => {
                let v = value(property);
                values.iter().any(|l| l.matches(&v))
            }
            Expr::Affix {
                property,
                text,
                at_end,
            } => match value(property) {
                Value::String(s) => {
                    let (s, t) = (s.to_lowercase(), text.to_lowercase());
                    if *at_end {
                        s.ends_with(&t)
                    } else {
                        s.starts_with(&t)
                    }
                }
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(filter: &str, object: Value) -> bool {
        let expr = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e:?}"));
        expr.matches(&|p| object.get(p).cloned().unwrap_or(Value::Null))
    }

    #[test]
    fn prefixes_with_en_dash_and_doubled_quotes_parse() {
        let expr = parse(
            "startswith(displayName,'License – Microsoft') or startsWith(displayName, 'O''Brien')",
        )
        .unwrap();
        assert_eq!(expr.properties(), vec!["displayName", "displayName"]);
        assert_eq!(expr.advanced_operator(), None);
        assert!(check(
            "startswith(displayName,'O''Brien')",
            json!({"displayName": "o'brien team"})
        ));
    }

    #[test]
    fn comparisons_follow_the_directory() {
        let user = json!({"accountEnabled": false, "mail": "A@X.com", "jobTitle": null});
        assert!(check("accountEnabled eq false", user.clone()));
        assert!(!check("accountEnabled eq true", user.clone()));
        assert!(
            check("mail eq 'a@x.COM'", user.clone()),
            "strings ignore case"
        );
        assert!(check("jobTitle eq null and mail ne null", user.clone()));
        assert!(check("NOT (accountEnabled eq true)", user.clone()));
        assert!(check("mail in ('b@x.com', 'a@x.com')", user.clone()));
        assert!(check(
            "endswith(mail,'@x.com') OR accountEnabled eq true",
            user
        ));
        assert_eq!(
            parse("mail ne null").unwrap().advanced_operator(),
            Some("ne")
        );
    }

    #[test]
    fn broken_filters_are_refused() {
        for bad in [
            "",
            "displayName eq",
            "displayName gt 'x'",
            "startswith(displayName)",
            "contains(displayName,'x')",
            "(accountEnabled eq true",
            "mail eq 'open",
            "accountEnabled eq true extra",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
