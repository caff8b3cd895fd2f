//! The step's output ([`Diff`](sluice_guest_services::sync::Diff)), written as it is decided. The three lists
//! that grow with the tenant (`missing`, `present`, `adopted`: at a
//! million members some 200 MB of JSON) are written entry by entry as
//! JSON text and never held as records; the rest is small and stays typed
//! until [`Written::finish`] writes the whole text.

use std::marker::PhantomData;

use serde::Serialize;
use sluice_guest::StepError;
use sluice_guest_services::sync::{
    Adopted, Counts, Guard, InactivePerson, InactiveUnmanaged, Leaver, Leaving, Person, Present,
    Returner,
};

/// A list of the output, as the JSON text of its items so far.
pub struct List<T> {
    text: Vec<u8>,
    len: usize,
    _items: PhantomData<fn(&T)>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            text: Vec::new(),
            len: 0,
            _items: PhantomData,
        }
    }
}

impl<T: Serialize> List<T> {
    /// Writes `item` at the end of the list.
    pub fn push(&mut self, item: &T) -> Result<(), StepError> {
        if self.len > 0 {
            self.text.push(b',');
        }
        serde_json::to_writer(&mut self.text, item).map_err(|e| {
            StepError::internal(format!("an output entry could not be written: {e}"))
                .with_code("bad-output")
        })?;
        self.len += 1;
        Ok(())
    }

    /// How many items the list holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The list's JSON text.
    fn write_to(self, out: &mut Vec<u8>) {
        out.push(b'[');
        out.extend_from_slice(&self.text);
        out.push(b']');
    }
}

/// The output so far (the fields are [`Diff`](sluice_guest_services::sync::Diff)'s).
#[derive(Default)]
pub struct Written {
    pub missing: List<Person>,
    pub present: List<Present>,
    pub present_inactive: Vec<InactivePerson>,
    pub counts: Counts,
    pub adopted: List<Adopted>,
    pub leavers: Vec<Leaver>,
    pub leaving: Vec<Leaving>,
    pub returners: Vec<Returner>,
    pub inactive_unmanaged: Vec<InactiveUnmanaged>,
    pub guard: Guard,
}

impl Written {
    /// The output's text: a `Diff`, its fields in their order.
    pub fn finish(self) -> Result<String, StepError> {
        let present_inactive = small(&self.present_inactive)?;
        let counts = small(&self.counts)?;
        let leavers = small(&self.leavers)?;
        let leaving = small(&self.leaving)?;
        let returners = small(&self.returners)?;
        let inactive_unmanaged = small(&self.inactive_unmanaged)?;
        let guard = small(&self.guard)?;
        let size = 200
            + self.missing.text.len()
            + self.present.text.len()
            + self.adopted.text.len()
            + [
                &present_inactive,
                &counts,
                &leavers,
                &leaving,
                &returners,
                &inactive_unmanaged,
                &guard,
            ]
            .iter()
            .map(|t| t.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"missing\":");
        self.missing.write_to(&mut out);
        out.extend_from_slice(b",\"present\":");
        self.present.write_to(&mut out);
        for (name, text) in [("present_inactive", present_inactive), ("counts", counts)] {
            field(&mut out, name, &text);
        }
        out.extend_from_slice(b",\"adopted\":");
        self.adopted.write_to(&mut out);
        for (name, text) in [
            ("leavers", leavers),
            ("leaving", leaving),
            ("returners", returners),
            ("inactive_unmanaged", inactive_unmanaged),
            ("guard", guard),
        ] {
            field(&mut out, name, &text);
        }
        out.push(b'}');
        String::from_utf8(out).map_err(|e| {
            StepError::internal(format!("the output is not UTF-8: {e}")).with_code("bad-output")
        })
    }
}

fn field(out: &mut Vec<u8>, name: &str, text: &[u8]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(text);
}

/// A small field's text, written whole.
fn small<T: Serialize>(value: &T) -> Result<Vec<u8>, StepError> {
    serde_json::to_vec(value).map_err(|e| {
        StepError::internal(format!("the output could not be written: {e}")).with_code("bad-output")
    })
}

/// The whole output as a [`Diff`], for tests.
#[cfg(test)]
pub fn parsed(written: Written) -> sluice_guest_services::sync::Diff {
    serde_json::from_str(&written.finish().unwrap()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest_services::procore::Id;
    use sluice_guest_services::sync::{AdoptedStatus, Diff, LeaveReason, MatchedBy, Origin};

    #[test]
    fn the_text_is_the_diff_serialised() {
        let person = Person {
            key: "a@x.com".into(),
            id: Some("e\"1".into()),
            mail: None,
            user_principal_name: Some("a@x.com".into()),
            display_name: Some("Zoë".into()),
            given_name: None,
            surname: None,
            groups: vec!["License – E3".into()],
        };
        let expected = Diff {
            missing: vec![person.clone(), person.clone()],
            present: vec![Present {
                key: "b@x.com".into(),
                procore_id: Id::Text("7".into()),
            }],
            present_inactive: vec![InactivePerson {
                person,
                procore_id: Id::Number(8),
            }],
            counts: Counts {
                people: 4,
                missing: 2,
                ..Counts::default()
            },
            adopted: vec![Adopted {
                key: "b@x.com".into(),
                status: AdoptedStatus::Adopted,
                procore_id: Id::Number(7),
                matched_by: MatchedBy::Upn,
                license_group: None,
                origin: Origin::Domain,
            }],
            leavers: vec![Leaver {
                key: "c@x.com".into(),
                procore_id: Id::Number(9),
                name: None,
                email: Some("c@x.com".into()),
                login: None,
                reason: LeaveReason::UserGone,
            }],
            leaving: Vec::new(),
            returners: Vec::new(),
            inactive_unmanaged: Vec::new(),
            guard: Guard {
                hold: true,
                reason: "why".into(),
            },
        };
        let mut written = Written::default();
        for p in &expected.missing {
            written.missing.push(p).unwrap();
        }
        for p in &expected.present {
            written.present.push(p).unwrap();
        }
        for a in &expected.adopted {
            written.adopted.push(a).unwrap();
        }
        written.present_inactive = expected.present_inactive.clone();
        written.counts = expected.counts;
        written.leavers = expected.leavers.clone();
        written.guard = expected.guard.clone();
        assert_eq!(written.missing.len(), 2);
        let text = written.finish().unwrap();
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
    }
}
