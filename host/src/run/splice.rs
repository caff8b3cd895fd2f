//! A call's output with the lists its component handed over in pages
//! (the WIT's `paged-output`) put in their placeholders' places: from
//! then on an ordinary output, whose readers never know the list came in
//! pages.
//!
//! The component's own text is checked and indexed as any output's; each
//! list's items were checked as they were appended, so the joined text is
//! valid JSON without being read again, and the index is shifted rather
//! than found anew. The output's text is allocated once at its size and
//! each list's blocks are copied into it and freed one by one, so a list
//! of hundreds of MB is held about once, and copied once.

use std::ops::Range;

use sluice_contract::{PAGED_KEYWORD as KEYWORD, PagedPlaceholder as Placeholder};

use super::output::{Fields, Kind, StepOutput};
use crate::engine::{AppendedList, AppendedLists};

/// Why an output and the lists appended during its call do not match.
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "its output says the list `{name}` holds {said} items, but {appended} were appended (a list writer not finished?)"
    )]
    Length {
        name: String,
        said: u64,
        appended: u64,
    },
    #[error(
        "{appended} items were appended to the list `{name}`, but the output does not hold its placeholder at `{name}` ({{\"{KEYWORD}\": \"{name}\", \"length\": {appended}}})"
    )]
    NotNamed { name: String, appended: u64 },
    #[error("the output's `{field}` holds the placeholder of another list, `{named}`")]
    OtherName { field: String, named: String },
}

/// The output `text` with each of `lists` in its placeholder's place (a
/// list appended to nothing, without a placeholder, leaves the output as
/// it is: a marked list written whole).
pub fn spliced(text: String, lists: AppendedLists) -> Result<StepOutput, SpliceError> {
    let output = StepOutput::parse(text)?;
    let mut places = Vec::new();
    for (name, list) in lists {
        let placeholder = output
            .field(&name)
            .filter(|j| j.kind() == Kind::Object)
            .and_then(|j| serde_json::from_str::<Placeholder>(j.text()).ok());
        match placeholder {
            Some(p) if p.name != name => {
                return Err(SpliceError::OtherName {
                    field: name,
                    named: p.name,
                });
            }
            Some(p) if p.length != list.len => {
                return Err(SpliceError::Length {
                    name,
                    said: p.length,
                    appended: list.len,
                });
            }
            Some(_) => places.push((name, list)),
            None if list.len == 0 => {}
            None => {
                return Err(SpliceError::NotNamed {
                    name,
                    appended: list.len,
                });
            }
        }
    }
    if places.is_empty() {
        return Ok(output);
    }
    let (text, fields) = match output.into_parts() {
        Ok(parts) => parts,
        // Just made here: nothing else holds it.
        Err(shared) => (shared.text().to_string(), field_places(&shared)),
    };
    let mut lists: Vec<(Range<usize>, AppendedList)> = places
        .into_iter()
        .filter_map(|(name, list)| {
            let (_, range) = fields.iter().find(|(k, _)| *k == name)?;
            Some((range.clone(), list))
        })
        .collect();
    lists.sort_by_key(|(range, _)| range.start);
    let fields = shifted(fields, &lists);
    let text = joined(&text, lists);
    let text = String::from_utf8(text).map_err(|e| {
        <serde_json::Error as serde::de::Error>::custom(format!(
            "a spliced output is not UTF-8: {e}"
        ))
    })?;
    Ok(StepOutput::from_parts(text, fields))
}

fn field_places(output: &StepOutput) -> Fields {
    let whole = output.text().as_ptr() as usize;
    output
        .fields()
        .map(|(k, j)| {
            let start = j.text().as_ptr() as usize - whole;
            (k.to_string(), start..start + j.text().len())
        })
        .collect()
}

/// How many bytes the list takes in the output: its items and brackets.
fn written(list: &AppendedList) -> usize {
    list.text_len() + 2
}

/// `len` bytes of text once `lists` (places inside them) are written in.
fn grown(len: usize, lists: &[(Range<usize>, AppendedList)]) -> usize {
    let taken: usize = lists.iter().map(|(p, _)| p.len()).sum();
    let given: usize = lists.iter().map(|(_, l)| written(l)).sum();
    len - taken + given
}

/// The fields' places once each list (by its place, in order) is in.
fn shifted(fields: Fields, lists: &[(Range<usize>, AppendedList)]) -> Fields {
    fields
        .into_iter()
        .map(|(key, range)| {
            let mut start = range.start;
            let mut len = range.len();
            for (place, list) in lists {
                if place.end <= range.start {
                    start = start + written(list) - place.len();
                } else if *place == range {
                    len = written(list);
                }
            }
            (key, start..start + len)
        })
        .collect()
}

/// `text` with each list (its place in `text`, in order) written in, in
/// one buffer allocated at its size; each block of a list is freed once
/// it is copied.
fn joined(text: &str, lists: Vec<(Range<usize>, AppendedList)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(grown(text.len(), &lists));
    let mut from = 0;
    for (place, list) in lists {
        out.extend_from_slice(&text.as_bytes()[from..place.start]);
        out.push(b'[');
        for block in list.into_blocks() {
            out.extend_from_slice(&block);
        }
        out.push(b']');
        from = place.end;
    }
    out.extend_from_slice(&text.as_bytes()[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// `items` as appended in pages of up to 7 items, a block each.
    fn list(items: &[Value]) -> AppendedList {
        let blocks = items
            .chunks(7)
            .enumerate()
            .map(|(i, page)| {
                let texts: Vec<String> = page.iter().map(Value::to_string).collect();
                let comma = if i > 0 { "," } else { "" };
                format!("{comma}{}", texts.join(",")).into_bytes()
            })
            .collect();
        AppendedList::of(blocks, items.len() as u64)
    }

    fn lists(named: &[(&str, &[Value])]) -> AppendedLists {
        named
            .iter()
            .map(|(name, items)| (name.to_string(), list(items)))
            .collect()
    }

    fn people(n: usize, tag: &str) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"key": format!("{tag}{i}")}))
            .collect()
    }

    /// The spliced output is the output the component would have written
    /// whole, and its index is the one parsing that text gives.
    fn assert_same_as_whole(output: &StepOutput, whole: &Value) {
        assert_eq!(&output.to_value(), whole);
        let parsed = StepOutput::parse(output.text().to_string()).unwrap();
        assert_eq!(output.text(), parsed.text());
        let ours: Vec<(&str, &str)> = output.fields().map(|(k, j)| (k, j.text())).collect();
        let theirs: Vec<(&str, &str)> = parsed.fields().map(|(k, j)| (k, j.text())).collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn lists_go_in_their_placeholders_places_in_order_and_the_index_follows() {
        let (a, b, c) = (people(3, "a"), people(50, "b"), people(2, "c"));
        let text = r#" {"n": 1, "small": {"x-sluice-paged": "small", "length": 3},
            "note": "x \" y", "big": {"length": 50, "x-sluice-paged": "big"}, "m": [1, 2],
            "tail": {"x-sluice-paged":"tail","length":2}, "end": true} "#;
        let output = spliced(
            text.to_string(),
            lists(&[("small", &a), ("big", &b), ("tail", &c)]),
        )
        .unwrap();
        let whole = json!({"n": 1, "small": a, "note": "x \" y", "big": b, "m": [1, 2],
            "tail": c, "end": true});
        assert_same_as_whole(&output, &whole);
        assert_eq!(output.list_at(&["big".to_string()]).unwrap().len(), 50);
    }

    #[test]
    fn the_largest_list_may_come_first_or_last_or_alone() {
        for (first, last) in [(40, 2), (2, 40), (0, 0), (1, 0)] {
            let (a, b) = (people(first, "a"), people(last, "b"));
            let text = format!(
                r#"{{"a": {{"x-sluice-paged": "a", "length": {first}}}, "b": {{"x-sluice-paged": "b", "length": {last}}}}}"#
            );
            let output = spliced(text, lists(&[("a", &a), ("b", &b)])).unwrap();
            assert_same_as_whole(&output, &json!({"a": a, "b": b}));
        }
        let a = people(5, "a");
        let output = spliced(
            r#"{"a":{"x-sluice-paged":"a","length":5}}"#.into(),
            lists(&[("a", &a)]),
        )
        .unwrap();
        assert_same_as_whole(&output, &json!({ "a": a }));
    }

    #[test]
    fn a_list_never_appended_to_may_be_written_whole() {
        let text = r#"{"people": [{"key": "w"}], "other": {"x-sluice-paged": "x", "length": 1}}"#;
        let output = spliced(text.to_string(), lists(&[("people", &[])])).unwrap();
        assert_eq!(output.text(), text, "unchanged, an unmarked field too");
        let output = spliced("[1]".to_string(), lists(&[("people", &[])])).unwrap();
        assert_eq!(output.text(), "[1]");
    }

    #[test]
    fn placeholders_and_appended_lists_that_do_not_match_are_refused() {
        let two = people(2, "p");
        let named = |length: u64| {
            format!(r#"{{"people": {{"x-sluice-paged": "people", "length": {length}}}}}"#)
        };
        let e = spliced(named(3), lists(&[("people", &two)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "its output says the list `people` holds 3 items, but 2 were appended (a list writer not finished?)"
        );
        let e = spliced(named(1), lists(&[("people", &[])])).unwrap_err();
        assert!(
            matches!(
                e,
                SpliceError::Length {
                    said: 1,
                    appended: 0,
                    ..
                }
            ),
            "{e}"
        );
        for text in [
            r#"{"people": []}"#,
            r#"{"n": 1}"#,
            "[]",
            r#"{"people": {"x-sluice-paged": "people"}}"#,
        ] {
            let e = spliced(text.into(), lists(&[("people", &two)])).unwrap_err();
            assert_eq!(
                e.to_string(),
                r#"2 items were appended to the list `people`, but the output does not hold its placeholder at `people` ({"x-sluice-paged": "people", "length": 2})"#,
                "{text}"
            );
        }
        let other = r#"{"people": {"x-sluice-paged": "others", "length": 2}}"#;
        let e = spliced(other.into(), lists(&[("people", &two)])).unwrap_err();
        assert!(matches!(e, SpliceError::OtherName { .. }), "{e}");
        assert!(spliced("{".into(), lists(&[])).is_err());
    }
}
