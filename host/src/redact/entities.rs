//! Text with HTML numeric character references (`&#126;`, `&#x7E;`)
//! decoded, and the way back to the text it came from.
//!
//! An HTML page or XML error body may write any of a secret's characters
//! as a reference, some and not others, as its escaper sees fit: no list
//! of forms covers every choice. So the redactor also searches the text
//! with the references decoded, and redacts each find where it stands in
//! the original.

use std::ops::Range;

/// Text with its numeric character references decoded.
pub struct Decoded {
    text: Vec<u8>,
    /// For each byte of `text`, the bytes of the original it stands for
    /// (a whole reference, for each byte of the character it decodes to).
    from: Vec<Range<usize>>,
}

impl Decoded {
    /// `bytes` with its references decoded; `None` when it has none.
    pub fn of(bytes: &[u8]) -> Option<Decoded> {
        memchr::memmem::find(bytes, b"&#")?;
        let mut text = Vec::with_capacity(bytes.len());
        let mut from = Vec::with_capacity(bytes.len());
        let mut decoded_any = false;
        let mut at = 0;
        while at < bytes.len() {
            if let Some((c, len)) = reference(&bytes[at..]) {
                let mut utf8 = [0u8; 4];
                for byte in c.encode_utf8(&mut utf8).bytes() {
                    text.push(byte);
                    from.push(at..at + len);
                }
                decoded_any = true;
                at += len;
            } else {
                text.push(bytes[at]);
                from.push(at..at + 1);
                at += 1;
            }
        }
        decoded_any.then_some(Decoded { text, from })
    }

    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// The bytes of the original that `span` of the decoded text stands for.
    pub fn source(&self, span: Range<usize>) -> Range<usize> {
        match (self.from.get(span.start), span.end.checked_sub(1)) {
            (Some(first), Some(last)) if last >= span.start => first.start..self.from[last].end,
            _ => span,
        }
    }
}

/// The character a reference at the start of `bytes` stands for, and the
/// reference's length: `&#` then decimal digits, or `x`/`X` and hex
/// digits, then `;`.
fn reference(bytes: &[u8]) -> Option<(char, usize)> {
    let rest = bytes.strip_prefix(b"&#")?;
    let (radix, digits_at) = match rest.first() {
        Some(b'x' | b'X') => (16, 3),
        _ => (10, 2),
    };
    let digits = &bytes[digits_at..];
    let count = digits
        .iter()
        .take(8)
        .take_while(|b| char::from(**b).is_digit(radix))
        .count();
    if count == 0 || digits.get(count) != Some(&b';') {
        return None;
    }
    let value = std::str::from_utf8(&digits[..count]).ok()?;
    let c = char::from_u32(u32::from_str_radix(value, radix).ok()?)?;
    Some((c, digits_at + count + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_decoded_and_found_where_they_stood() {
        let original = b"a&#126;b&#x2D;c&#X5f;&#233;&#;&#x;&#12a;&amp;";
        let decoded = Decoded::of(original).unwrap();
        let text = String::from_utf8(decoded.text().to_vec()).unwrap();
        assert_eq!(text, "a~b-c_\u{e9}&#;&#x;&#12a;&amp;");
        // `~b-` in the decoded text is `&#126;b&#x2D;` in the original.
        assert_eq!(decoded.source(1..4), 1..14);
        // Both bytes of `é` stand for its whole reference.
        let e = text.find('\u{e9}').unwrap();
        assert_eq!(&original[decoded.source(e..e + 2)], b"&#233;");
        assert!(Decoded::of(b"no references &amp; here").is_none());
        assert!(Decoded::of(b"only &#broken; ones").is_none());
    }
}
