//! The forms a secret takes when a service or a component passes it on.
//!
//! A service that echoes a request (a debugging endpoint, a gateway's error
//! page) quotes its `Authorization` header or form body as it sees fit: as
//! is, percent-encoded the way URLs, forms or JavaScript encode, escaped
//! for JSON (`/` as `\/` the way PHP writes it, or every symbol as
//! `\u00XX` the way .NET does), or in base64 (a Basic credential, a JWT's
//! claims, a dump of the request); and, answering in JSON, it writes each
//! of those inside a JSON string, escaped once more (`\/` as `\\/`).
//! [`forms`] lists each of these spellings of one secret, so a plain
//! search for all of them finds it in any.
//!
//! Pages and templates escape it for HTML (`&` as `&amp;`), Go's JSON
//! escapes only `<`, `>` and `&` (as `\u003c`), a URL quoted inside
//! another URL is percent-encoded twice (`%7E` as `%257E`), and a dump of
//! bytes writes it in hex, and a service answering in UTF-16 puts a NUL
//! byte beside each of its characters: those are forms too.
//!
//! Base64 of a secret inside a longer base64 text depends on where the
//! secret starts within a 3-byte group; the characters that encode only
//! the secret's own bits are the same whatever comes before and after, so
//! those (for each of the three offsets) are searched for.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

/// RFC 3986's unreserved characters stay as they are; everything else is
/// encoded (what Sluice itself does to query values).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript's `encodeURIComponent` also leaves `!'()*` alone.
const URI_COMPONENT: &AsciiSet = &STRICT
    .remove(b'!')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*');
/// Path encoders (Python's `quote`, most routers) leave `/` alone too.
const PATH: &AsciiSet = &STRICT.remove(b'/');
/// `encodeURI` and the like encode only what cannot appear in a URL.
const URL_TEXT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'%');

/// Base64 fragments shorter than this are left out: a short run of base64
/// characters turns up by chance in any long base64 text.
const MIN_BASE64_FRAGMENT: usize = 8;

/// Every spelling of `secret` to search for, the secret itself first,
/// without duplicates.
pub fn forms(secret: &str) -> Vec<String> {
    let mut all = vec![secret.to_string()];
    let mut push = |form: String| {
        if !form.is_empty() && !all.contains(&form) {
            all.push(form);
        }
    };
    for encoded in url_encodings(secret) {
        push(encoded);
    }
    for json in json_forms(secret) {
        push(json);
    }
    push(html_escaped(secret, "&#x27;"));
    push(html_escaped(secret, "&#39;"));
    push(go_json(secret));
    if secret.len() >= MIN_HEX_SECRET {
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        push(hex.to_ascii_uppercase());
        push(hex);
    }
    for b64 in base64_forms(secret.as_bytes()) {
        push(b64);
    }
    // UTF-16, little- and big-endian, as a service answering in it (its
    // `charset=utf-16`, a Windows tool's dump) quotes an ASCII secret:
    // each character beside a NUL byte. (The replacement is ten bytes, so
    // the text's 2-byte units stay aligned.)
    if secret.is_ascii() {
        push(secret.chars().flat_map(|c| [c, '\0']).collect());
        push(secret.chars().flat_map(|c| ['\0', c]).collect());
    }
    // Each spelling with a `\` or `"` in it, as it stands inside a JSON
    // string: a JSON service that echoes `tok\/en` writes `"tok\\/en"`,
    // which a component parses back to `tok\/en`.
    let in_json: Vec<String> = all
        .iter()
        .filter(|f| f.contains(['\\', '"']) && !f.contains('\0'))
        .map(|f| f.replace('\\', "\\\\").replace('"', "\\\""))
        .collect();
    for form in in_json {
        if !all.contains(&form) {
            all.push(form);
        }
    }
    all
}

/// The secret percent-encoded as URLs, forms and JavaScript encode it
/// (hex digits upper and lower), and each of those encoded once more.
fn url_encodings(secret: &str) -> Vec<String> {
    let mut percent = Vec::new();
    for set in [STRICT, URI_COMPONENT, PATH, URL_TEXT] {
        let encoded = utf8_percent_encode(secret, set).to_string();
        percent.push(lower_hex_escapes(&encoded, '%'));
        percent.push(encoded);
    }
    // Forms (application/x-www-form-urlencoded): space as `+`, `~` as %7E.
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    percent.push(lower_hex_escapes(&form, '%'));
    percent.push(form);
    // Each percent-encoded once more, as a URL inside a URL is.
    let twice: Vec<String> = percent
        .iter()
        .filter(|f| f.contains('%'))
        .map(|f| f.replace('%', "%25"))
        .collect();
    percent.extend(twice);
    percent
}

/// What a loose spelling of a secret stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole secret, changed (case, entities).
    Whole,
    /// Its first part: a match goes on over as much more of it as follows.
    Head,
    /// Its last part: a match goes back over as much more as precedes.
    Tail,
}

/// Secrets shorter than this have no head and tail spellings: a third of
/// a short secret is too few characters to leave out of a match.
const MIN_PARTED_SECRET: usize = 18;

/// Spellings of `secret` that are not among its [`forms`]: what a service
/// does to a value it echoes in its own words (upper or lower case, its
/// encodings too), every character of it escaped, and what is left of one
/// cut short or wrapped onto two lines (its first and last two thirds).
/// They are searched with a matcher of their own (so the forms keep the
/// packed search), and a head or tail match is widened over the rest of
/// the secret that is there.
pub fn loose_forms(secret: &str) -> Vec<(String, Part)> {
    let encoded = forms(secret);
    let mut all: Vec<(String, Part)> = Vec::new();
    let mut push = |form: String, part: Part| {
        if !form.is_empty() && !encoded.contains(&form) && !all.iter().any(|(f, _)| *f == form) {
            all.push((form, part));
        }
    };
    push(secret.to_uppercase(), Part::Whole);
    push(secret.to_lowercase(), Part::Whole);
    // Each URL or form encoding in another case too: a service that
    // upper-cases the form body it echoes writes `~` as `%7E` and the
    // letters in capitals. (Only those: the search stays packed, which
    // takes at most 64 spellings for all the secrets a run knows.)
    for form in url_encodings(secret) {
        push(form.to_uppercase(), Part::Whole);
        push(form.to_lowercase(), Part::Whole);
    }
    if secret.len() <= MAX_ESCAPED_SECRET {
        for form in every_character_escaped(secret) {
            push(form, Part::Whole);
        }
    }
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= MIN_PARTED_SECRET {
        let part = chars.len().div_ceil(3) * 2;
        push(chars[..part].iter().collect(), Part::Head);
        push(chars[chars.len() - part..].iter().collect(), Part::Tail);
    }
    all
}

/// The secret as HTML text or an attribute value, `'` written as
/// `apostrophe` (escapers differ: `&#x27;`, `&#39;`).
fn html_escaped(secret: &str, apostrophe: &str) -> String {
    let mut out = String::with_capacity(secret.len());
    for c in secret.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str(apostrophe),
            c => out.push(c),
        }
    }
    out
}

/// The secret inside a JSON string as Go's `encoding/json` writes it:
/// serde's escapes, and `<`, `>` and `&` as `\u003c`, `\u003e`, `\u0026`.
fn go_json(secret: &str) -> String {
    let quoted = serde_json::to_string(secret).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(secret)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Secrets shorter than this have no hex form: a few hex digits turn up
/// by chance in any text of ids. A flow's own secrets are never shorter
/// ([`super::MIN_SECRET_LEN`]); sixteen hex digits do not turn up by chance.
const MIN_HEX_SECRET: usize = 8;

/// Secrets longer than this (access tokens) have no every-character
/// escapes: services echo a token as it is, and a token's escapes would
/// make the search several times larger.
const MAX_ESCAPED_SECRET: usize = 256;

/// The secret with every character escaped, letters and digits too, as a
/// hand-rolled dump writes it: each UTF-8 byte as `%XX` and each UTF-16
/// unit as `\uXXXX`, with upper- and lower-case hex digits.
fn every_character_escaped(secret: &str) -> Vec<String> {
    let percent: String = secret.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut json = String::new();
    for unit in secret.encode_utf16() {
        json.push_str(&format!("\\u{unit:04X}"));
    }
    vec![
        lower_hex_escapes(&percent, '%'),
        percent,
        json.to_ascii_lowercase(),
        json,
    ]
}

/// `%2F` as `%2f`: encoders differ in the case of their hex digits.
fn lower_hex_escapes(encoded: &str, marker: char) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == marker {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

/// The secret inside a JSON string: as serde writes it, with `/` as `\/`,
/// and with every ASCII symbol (and everything past ASCII) as `\u00XX`.
fn json_forms(secret: &str) -> Vec<String> {
    let quoted = serde_json::to_string(secret).unwrap_or_default();
    let plain = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(secret)
        .to_string();
    let slashed = plain.replace('/', "\\/");
    let mut upper = String::new();
    for c in secret.chars() {
        if c.is_ascii_alphanumeric() {
            upper.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                upper.push_str(&format!("\\u{unit:04X}"));
            }
        }
    }
    let lower = upper
        .split("\\u")
        .enumerate()
        .map(|(i, part)| {
            if i == 0 {
                part.to_string()
            } else {
                let (hex, rest) = part.split_at(4.min(part.len()));
                format!("\\u{}{rest}", hex.to_ascii_lowercase())
            }
        })
        .collect::<String>();
    vec![plain, slashed, upper, lower]
}

/// The secret in base64, standard and URL-safe: whole (with and without
/// padding), and the stable middle of it at each offset within a group.
fn base64_forms(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for engine in [&STANDARD, &URL_SAFE] {
        out.push(engine.encode(secret));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for offset in 0..3usize {
            let mut shifted = vec![0u8; offset];
            shifted.extend_from_slice(secret);
            let encoded = engine.encode(&shifted);
            // Characters carry 6 bits each: skip those holding any bit of
            // the padding before, stop before any holding bits after.
            let first = (offset * 8).div_ceil(6);
            let last = ((offset + secret.len()) * 8) / 6;
            if let Some(middle) = encoded.get(first..last)
                && middle.len() >= MIN_BASE64_FRAGMENT
            {
                out.push(middle.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Ab9~x/y+z=w.q_r-s!t*u(v)";

    fn found(text: &str) -> bool {
        forms(SECRET).iter().any(|f| text.contains(f.as_str()))
    }

    #[test]
    fn every_usual_encoding_of_a_secret_is_a_form_of_it() {
        let encodings = [
            // Percent-encoded the strict way, then as forms do (`~` as %7E).
            "Ab9~x%2Fy%2Bz%3Dw.q_r-s%21t%2Au%28v%29",
            "Ab9%7Ex%2Fy%2Bz%3Dw.q_r-s%21t*u%28v%29",
            "Ab9~x%2fy%2bz%3dw.q_r-s%21t%2au%28v%29",
            // encodeURIComponent, and a path encoder leaving `/`.
            "Ab9~x%2Fy%2Bz%3Dw.q_r-s!t*u(v)",
            "Ab9~x/y%2Bz%3Dw.q_r-s%21t%2Au%28v%29",
            // JSON, with `\/`, and .NET's \u escapes.
            "Ab9~x\\/y+z=w.q_r-s!t*u(v)",
            "Ab9\\u007Ex\\u002Fy\\u002Bz\\u003Dw\\u002Eq\\u005Fr\\u002Ds\\u0021t\\u002Au\\u0028v\\u0029",
            // Those two once more inside a JSON string, as an echoing JSON
            // service writes them.
            "Ab9~x\\\\/y+z=w.q_r-s!t*u(v)",
            "Ab9\\\\u007ex\\\\u002fy\\\\u002bz\\\\u003dw\\\\u002eq\\\\u005fr\\\\u002ds\\\\u0021t\\\\u002au\\\\u0028v\\\\u0029",
        ];
        for encoded in encodings {
            assert!(found(encoded), "{encoded} was not recognised");
        }
        // Base64, at every offset inside a longer base64 text.
        for prefix in ["", "a", "ab", "abc", "Bearer "] {
            let text = format!("{prefix}{SECRET} and more");
            for engine in [&STANDARD, &URL_SAFE] {
                let encoded = engine.encode(text.as_bytes());
                assert!(found(&encoded), "{prefix:?}: {encoded}");
            }
        }
    }

    #[test]
    fn html_go_json_twice_percent_encoded_and_hex_spellings_are_forms() {
        let secret = "Pk7&Lm<Rz'9~Qw/Yx+Vb=Nc!Hd\"Jf";
        let all = forms(secret);
        let found = |text: &str| all.iter().any(|f| text.contains(f.as_str()));
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        for encoded in [
            "<p>Pk7&amp;Lm&lt;Rz&#x27;9~Qw/Yx+Vb=Nc!Hd&quot;Jf</p>",
            "title=\"Pk7&amp;Lm&lt;Rz&#39;9~Qw/Yx+Vb=Nc!Hd&quot;Jf\"",
            "{\"m\":\"Pk7\\u0026Lm\\u003cRz'9~Qw/Yx+Vb=Nc!Hd\\\"Jf\"}",
            "Pk7%2526Lm%253CRz%25279~Qw%252FYx%252BVb%253DNc%2521Hd%2522Jf",
            hex.as_str(),
            &hex.to_ascii_uppercase(),
        ] {
            assert!(found(encoded), "{encoded} was not recognised");
        }
        // An Entra-style secret: `~` percent-encoded twice by a form.
        let entra = "Q8w8Q~aB3.dE5_fG7-hJ9kL1mN2pR4sT6vX8zY0";
        let all = forms(entra);
        assert!(all.iter().any(|f| {
            "client_secret%3DQ8w8Q%257EaB3.dE5_fG7-hJ9kL1mN2pR4sT6vX8zY0".contains(f.as_str())
        }));
        // The shipped flow's secrets and tokens still fit the packed
        // searcher (see `Matcher`): few forms each.
        assert!(all.len() <= 20, "{}: {all:?}", all.len());
    }

    /// A service that answers in UTF-16 (`charset=utf-16`) echoes a
    /// secret with a NUL byte beside each character: found in either byte
    /// order, with or without a byte order mark.
    #[test]
    fn a_secret_in_utf16_is_a_form() {
        let secret = "Bearer SuperSecretTok3n99";
        let all = forms(secret);
        let body = format!("{{\"a\":\"{secret}\"}}");
        let little: Vec<u8> = body.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let big: Vec<u8> = body.encode_utf16().flat_map(u16::to_be_bytes).collect();
        for encoded in [little, big] {
            let found = all
                .iter()
                .any(|f| encoded.windows(f.len()).any(|w| w == f.as_bytes()));
            assert!(found, "{encoded:?}");
        }
        assert!(
            forms("Zoë-secret-1").iter().all(|f| !f.contains('\0')),
            "ASCII only"
        );
    }

    #[test]
    fn forms_of_a_plain_token_are_few_and_distinct() {
        let all = forms("eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.sig-nature_x");
        let unique: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        // Plain, the two base64 alphabets whole and at three offsets, hex.
        assert!(all.len() <= 14, "{all:?}");
    }

    #[test]
    fn short_secrets_have_no_base64_fragments() {
        // Only the whole encodings: five characters would match by chance.
        assert_eq!(base64_forms(b"abcd"), ["YWJjZA==", "YWJjZA=="]);
        // Nor a hex form.
        assert!(!forms("abcd").contains(&"61626364".to_string()));
    }

    #[test]
    fn loose_forms_are_another_case_and_two_thirds_from_either_end() {
        let loose = loose_forms("Zq8~Hx-4vN.pL2_rT7wK9mB3");
        let of = |part: Part| -> Vec<&str> {
            loose
                .iter()
                .filter(|(_, p)| *p == part)
                .map(|(f, _)| f.as_str())
                .collect()
        };
        let whole = of(Part::Whole);
        assert_eq!(
            whole[..2],
            ["ZQ8~HX-4VN.PL2_RT7WK9MB3", "zq8~hx-4vn.pl2_rt7wk9mb3"]
        );
        // Its encodings in another case, and every character escaped.
        for form in [
            "ZQ8%7EHX-4VN.PL2_RT7WK9MB3",
            "zq8%7ehx-4vn.pl2_rt7wk9mb3",
            "%5A%71%38%7E",
            "%5a%71%38%7e",
            "\\u005A\\u0071\\u0038\\u007E",
            "\\u005a\\u0071\\u0038\\u007e",
        ] {
            assert!(
                whole.iter().any(|w| w.starts_with(form)),
                "{form}: {whole:?}"
            );
        }
        // None of them is already one of its forms.
        let encoded = forms("Zq8~Hx-4vN.pL2_rT7wK9mB3");
        assert!(whole.iter().all(|w| !encoded.iter().any(|f| f == w)));
        assert_eq!(of(Part::Head), ["Zq8~Hx-4vN.pL2_r"]);
        assert_eq!(of(Part::Tail), ["vN.pL2_rT7wK9mB3"]);
        // A short secret has no parts.
        assert!(
            loose_forms("abc-1234")
                .iter()
                .all(|(_, p)| *p == Part::Whole)
        );
        // A long token has no every-character escapes.
        let token = "x".repeat(300);
        assert!(loose_forms(&token).iter().all(|(f, _)| !f.contains('%')));
    }
}
