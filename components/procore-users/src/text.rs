//! The output's JSON text, written user by user into one buffer sized once.
//!
//! The buffer is sized from the lists' `Total` headers and the bytes a user
//! of their first pages takes, with a quarter to spare: a buffer that grows
//! by doubling would, at the moment it grows, hold its old and its new
//! copy (three times the text at worst), which at a million users is what
//! would take the step to its memory cap. A list without `Total` is sized
//! by its first page and grows as it is written.

use sluice_guest::StepError;
use sluice_guest_services::procore::Page;
use sluice_guest_services::sync::ProcoreUser;

use crate::Listed;

/// What the buffer holds besides the users: `{"users":[` and the counts.
const FRAME: usize = 80;

/// The output's text as it is written.
pub struct Written {
    out: Vec<u8>,
    /// Users written, from the active and from the inactive list.
    counts: [usize; 2],
}

impl Written {
    /// A buffer for the lists whose first pages these are, with those
    /// pages written into it (active first), ready for the rest of the
    /// active list. The first inactive page is handed back, slimmed, to be
    /// written with [`Written::users`] after the active list.
    pub fn sized_for(
        active: Option<Page<Listed>>,
        inactive: Option<Page<Listed>>,
    ) -> Result<(Written, Vec<ProcoreUser>), StepError> {
        let (active, active_total) = slim_page(active, true);
        let (inactive, inactive_total) = slim_page(inactive, false);
        let mut sample = Vec::new();
        for user in active.iter().chain(&inactive) {
            write_user(&mut sample, user)?;
        }
        let sampled = active.len() + inactive.len();
        let per_user = sample.len().div_ceil(sampled.max(1)) + 1;
        let expected = active_total.saturating_add(inactive_total);
        let capacity = FRAME.saturating_add(expected.saturating_mul(per_user) / 4 * 5);
        let mut written = Written {
            out: Vec::with_capacity(capacity),
            counts: [0, 0],
        };
        written.out.extend_from_slice(b"{\"users\":[");
        written.users(active, true)?;
        Ok((written, inactive))
    }

    /// Writes `users`, from the active list or the inactive one.
    pub fn users(&mut self, users: Vec<ProcoreUser>, active: bool) -> Result<(), StepError> {
        for user in &users {
            if self.counts[0] + self.counts[1] > 0 {
                self.out.push(b',');
            }
            write_user(&mut self.out, user)?;
            self.counts[usize::from(!active)] += 1;
        }
        Ok(())
    }

    /// The whole output's text.
    pub fn finish(mut self) -> Result<String, StepError> {
        let [active, inactive] = self.counts;
        let tail = format!("],\"active_count\":{active},\"inactive_count\":{inactive}}}");
        self.out.extend_from_slice(tail.as_bytes());
        String::from_utf8(self.out).map_err(|e| {
            StepError::internal(format!("the output is not UTF-8: {e}")).with_code("bad-output")
        })
    }
}

/// A page's users, slimmed, and how many the list holds by its `Total`
/// (by this page when it has none).
fn slim_page(page: Option<Page<Listed>>, active: bool) -> (Vec<ProcoreUser>, usize) {
    let Some(page) = page else {
        return (Vec::new(), 0);
    };
    let total = page.total.unwrap_or(page.items.len());
    let users = page.items.into_iter().map(|u| u.slim(active)).collect();
    (users, total)
}

fn write_user(out: &mut Vec<u8>, user: &ProcoreUser) -> Result<(), StepError> {
    serde_json::to_writer(out, user).map_err(|e| {
        StepError::internal(format!("a user could not be written: {e}")).with_code("bad-output")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Output;
    use sluice_guest_services::procore::Id;

    fn user(id: u64, email: Option<&str>, active: bool) -> ProcoreUser {
        ProcoreUser {
            id: Id::Number(id),
            login: email.map(str::to_string),
            email_address: email.map(str::to_string),
            first_name: Some("Zoë \"Z\"".into()),
            last_name: None,
            is_active: active,
        }
    }

    fn page(users: &[ProcoreUser], total: Option<usize>) -> Option<Page<Listed>> {
        let text = serde_json::to_string(users).unwrap();
        Some(Page {
            items: serde_json::from_str(&text).unwrap(),
            total,
        })
    }

    #[test]
    fn the_text_is_what_serialising_the_output_gives() {
        let active: Vec<ProcoreUser> = (1..=3).map(|i| user(i, Some("a@x.com"), true)).collect();
        let more = vec![user(4, None, true)];
        let inactive = vec![user(5, Some("i@x.com"), false), user(6, None, true)];
        let (mut out, first_inactive) =
            Written::sized_for(page(&active, Some(4)), page(&inactive, Some(2))).unwrap();
        out.users(more.clone(), true).unwrap();
        out.users(first_inactive, false).unwrap();
        let expected = Output {
            users: [active, more, inactive].concat(),
            active_count: 4,
            inactive_count: 2,
        };
        assert_eq!(
            out.finish().unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }

    #[test]
    fn the_buffer_is_sized_from_the_totals_and_not_grown() {
        let active: Vec<ProcoreUser> = (0..10).map(|i| user(i, Some("a@x.com"), true)).collect();
        let (mut out, _) = Written::sized_for(page(&active, Some(1000)), None).unwrap();
        let capacity = out.out.capacity();
        for chunk in 1..100u64 {
            let users = (0..10).map(|i| user(chunk * 10 + i, Some("a@x.com"), true));
            out.users(users.collect(), true).unwrap();
        }
        assert_eq!(out.out.capacity(), capacity, "sized once");
        let text = out.finish().unwrap();
        assert!(
            capacity <= text.len() * 3 / 2 + FRAME,
            "{capacity} for {}",
            text.len()
        );
        let none = Written::sized_for(None, None).unwrap().0.finish().unwrap();
        assert_eq!(none, r#"{"users":[],"active_count":0,"inactive_count":0}"#);
    }
}
