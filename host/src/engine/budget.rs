//! The memory budget every live instance of the process shares.
//!
//! Each instance has its own cap ([`super::limits::MemoryCap`]), but a
//! process runs many at once (`for_each` items up to their `concurrency`,
//! steps of several flows under `serve`): eight items each under a 512 MiB
//! cap still take 4 GiB. Every instance's linear memory is also counted
//! against one [`MemoryBudget`]. An instance whose growth does not fit
//! waits for others to give memory back, and fails with
//! [`BudgetExhausted`] (rather than waiting) when that can never happen:
//! the growth alone is more than the budget, or every other instance that
//! holds memory is itself waiting.

use std::sync::Mutex;

use tokio::sync::Notify;

/// A growth the budget can never grant.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the host's memory budget of {} MiB, shared by every step running at once, cannot hold it: {}", .budget / MIB, self.why())]
pub struct BudgetExhausted {
    /// What this instance would hold after the growth.
    pub holding: usize,
    pub budget: usize,
    /// Held by every other instance when the growth was refused.
    pub others: usize,
}

impl BudgetExhausted {
    /// Whether no other step could ever make room: it alone is too large.
    pub fn alone(&self) -> bool {
        self.holding > self.budget
    }

    /// What to change so the step fits.
    pub fn hint(&self) -> &'static str {
        if self.alone() {
            "raise SLUICE_MEMORY_BUDGET above it"
        } else {
            "run fewer items at once (a lower `concurrency`) or raise SLUICE_MEMORY_BUDGET"
        }
    }

    fn why(&self) -> String {
        if self.alone() {
            format!(
                "it alone would hold {} MiB, more than the whole budget",
                self.holding / MIB
            )
        } else {
            format!(
                "it would hold {} MiB, and {} MiB are in use by other steps that are themselves waiting for memory",
                self.holding / MIB,
                self.others / MIB
            )
        }
    }
}

const MIB: usize = 1024 * 1024;

/// Bytes of linear memory in use by every live instance together.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    /// The most ever in use at once.
    peak: usize,
    /// Instances holding any memory.
    holders: usize,
    /// Instances waiting for memory to be given back.
    waiting: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The most linear memory ever in use at once.
    pub fn peak(&self) -> usize {
        self.state.lock().map(|s| s.peak).unwrap_or(usize::MAX)
    }

    /// Takes `more` bytes for an instance that already holds `held`,
    /// waiting while other instances that are running hold what it needs.
    pub async fn reserve(&self, held: usize, more: usize) -> Result<(), BudgetExhausted> {
        if more == 0 {
            return Ok(());
        }
        let mut counted_waiting = false;
        let outcome = loop {
            // Registered before the check, so a release between the check
            // and the wait still wakes this instance.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.try_reserve(held, more, counted_waiting) {
                Attempt::Granted => break Ok(()),
                Attempt::Never(e) => break Err(e),
                Attempt::Wait => counted_waiting = true,
            }
            freed.await;
        };
        if counted_waiting && let Ok(mut s) = self.state.lock() {
            s.waiting -= 1;
        }
        outcome
    }

    fn try_reserve(&self, held: usize, more: usize, waiting: bool) -> Attempt {
        let Ok(mut s) = self.state.lock() else {
            // A panic while counting: refuse rather than guess.
            return Attempt::Never(self.exhausted(held + more, usize::MAX));
        };
        let holding = held.saturating_add(more);
        if s.used.saturating_add(more) <= self.limit {
            s.used += more;
            s.peak = s.peak.max(s.used);
            if held == 0 {
                s.holders += 1;
            }
            return Attempt::Granted;
        }
        let others = s.used - held;
        let other_holders = s.holders - usize::from(held > 0);
        let others_waiting = s.waiting - usize::from(waiting);
        if holding > self.limit || other_holders <= others_waiting {
            return Attempt::Never(self.exhausted(holding, others));
        }
        if !waiting {
            s.waiting += 1;
        }
        Attempt::Wait
    }

    fn exhausted(&self, holding: usize, others: usize) -> BudgetExhausted {
        BudgetExhausted {
            holding,
            budget: self.limit,
            others,
        }
    }

    /// Gives back all `held` bytes of an instance that is ending.
    pub fn release(&self, held: usize) {
        if held == 0 {
            return;
        }
        if let Ok(mut s) = self.state.lock() {
            s.used = s.used.saturating_sub(held);
            s.holders = s.holders.saturating_sub(1);
        }
        self.freed.notify_waiters();
    }
}

enum Attempt {
    Granted,
    Wait,
    Never(BudgetExhausted),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_growth_waits_for_a_running_instance_to_give_memory_back() {
        let budget = Arc::new(MemoryBudget::new(100 * MIB));
        budget.reserve(0, 60 * MIB).await.unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(0, 60 * MIB).await })
        };
        // The second instance cannot have its 60 MiB until the first ends.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        budget.release(60 * MIB);
        waiter.await.unwrap().unwrap();
        assert_eq!(budget.peak(), 60 * MIB);
    }

    #[tokio::test]
    async fn a_growth_that_can_never_fit_fails_at_once() {
        let budget = MemoryBudget::new(100 * MIB);
        let e = budget.reserve(0, 101 * MIB).await.unwrap_err();
        assert_eq!((e.holding, e.budget, e.others), (101 * MIB, 100 * MIB, 0));
        assert_eq!(
            e.to_string(),
            "the host's memory budget of 100 MiB, shared by every step running at once, cannot hold it: it alone would hold 101 MiB, more than the whole budget"
        );
        // Two holders, each waiting for the other: the second fails.
        let budget = Arc::new(MemoryBudget::new(100 * MIB));
        budget.reserve(0, 50 * MIB).await.unwrap();
        budget.reserve(0, 40 * MIB).await.unwrap();
        let first = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(50 * MIB, 30 * MIB).await })
        };
        tokio::task::yield_now().await;
        assert!(!first.is_finished(), "the first waits: the second runs");
        let e = budget.reserve(40 * MIB, 30 * MIB).await.unwrap_err();
        assert_eq!(e.others, 50 * MIB);
        assert!(
            e.to_string().ends_with(
                "it would hold 70 MiB, and 50 MiB are in use by other steps that are themselves waiting for memory"
            ),
            "{e}"
        );
        budget.release(40 * MIB);
        first.await.unwrap().unwrap();
        assert_eq!(budget.peak(), 90 * MIB);
    }
}
