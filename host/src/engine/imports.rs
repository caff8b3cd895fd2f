//! The host side of the step world's imports: `log`, `connection.send`,
//! `state`, `paged` and `paged-output`. Each serves the [`Call`](super::instance::Call) its instance
//! was created for; in a `describe` instance each one traps.

use super::bindings::{
    connection, guest_log, guest_paged, guest_paged_output, guest_state, sluice,
};
use super::instance::{LogLevel, MAX_LOG_LINES, SandboxViolation, StepState};
use super::paged;
use super::paged_output::Refused as AppendRefused;
use crate::connections::{self, SendError};
use crate::state::{self, Refused};

/// How much of a log line a component's `log` call hands on, in
/// characters: far more than is shown, so the cut after redaction decides.
const MAX_LOG_LINE_BEFORE_REDACTION: usize = 64 * 1024;

impl sluice::flow::types::Host for StepState {}

impl guest_log::Host for StepState {
    fn log(&mut self, level: guest_log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            guest_log::Level::Debug => LogLevel::Debug,
            guest_log::Level::Info => LogLevel::Info,
            guest_log::Level::Warn => LogLevel::Warn,
            guest_log::Level::Error => LogLevel::Error,
        };
        let log = self.call("log")?.step.log.clone();
        self.logged += 1;
        if self.logged > MAX_LOG_LINES {
            self.dropped += 1;
            return Ok(());
        }
        // One line, bounded: a log call must not flood the run's output.
        // Cut generously here; the run cuts it short after redacting, so a
        // secret that straddles the cut is never left half shown.
        let line: String = message
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(MAX_LOG_LINE_BEFORE_REDACTION)
            .collect();
        log(level, &line);
        Ok(())
    }
}

fn method(m: connection::Method) -> connections::Method {
    match m {
        connection::Method::Get => connections::Method::Get,
        connection::Method::Head => connections::Method::Head,
        connection::Method::Post => connections::Method::Post,
        connection::Method::Put => connections::Method::Put,
        connection::Method::Patch => connections::Method::Patch,
        connection::Method::Delete => connections::Method::Delete,
    }
}

impl connection::Host for StepState {
    async fn send(
        &mut self,
        name: String,
        request: connection::Request,
    ) -> wasmtime::Result<Result<connection::Response, connection::SendError>> {
        let call = self.call("connection.send")?;
        let (step, waiting) = (call.step.clone(), call.waiting.clone());
        let Some(conn) = step.granted.get(&name).cloned() else {
            return Err(wasmtime::Error::new(SandboxViolation::from(
                connections::policy::Violation::NotGranted(name),
            )));
        };
        waiting.on(&conn, method(request.method), &request.url, &request.query);
        let outgoing = connections::OutgoingRequest {
            method: method(request.method),
            url: request.url,
            query: request.query,
            headers: request.headers,
            body: request.body,
            idempotent: request.idempotent,
            retry_when_not_acted: request.retry_when_not_acted,
        };
        let (result, stats) = conn
            .send(outgoing, step.dry_run, step.lease.as_deref())
            .await;
        waiting.answered(match &result {
            Ok(r) => Some(Ok(r.status)),
            Err(SendError::Unavailable(why)) => Some(Err(why.as_str())),
            // Not sent (a dry run, no token, refused), or too large to read.
            Err(_) => None,
        });
        step.record(&name, &stats);
        if let Ok(r) = &result
            && let Some(note) = &r.scrubbed
        {
            // The host's own line: not counted against the component's.
            (step.log)(LogLevel::Warn, note);
        }
        Ok(match result {
            Ok(r) => Ok(connection::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(SendError::Violation(v)) => {
                return Err(wasmtime::Error::new(SandboxViolation::from(v)));
            }
            Err(SendError::LeaseLost(why)) => {
                return Err(wasmtime::Error::new(super::instance::LeaseLost(why)));
            }
            Err(SendError::DryRun(what)) => Err(connection::SendError::DryRun(what)),
            Err(SendError::Unavailable(why)) => Err(connection::SendError::Unavailable(why)),
            Err(SendError::AuthFailed(e)) => Err(connection::SendError::AuthFailed(e.to_string())),
            Err(SendError::TooLarge(n)) => Err(connection::SendError::TooLarge(n)),
        })
    }
}

fn refused(r: Refused) -> guest_state::StateError {
    match r {
        Refused::EmptyKey | Refused::LongKey(_) | Refused::NulInKey => {
            guest_state::StateError::InvalidKey(r.to_string())
        }
        Refused::NotJson(_) | Refused::LargeValue(_) => {
            guest_state::StateError::InvalidValue(r.to_string())
        }
        Refused::TooManyWrites => {
            let mib = state::MAX_WRITE_BYTES_PER_CALL / (1024 * 1024);
            guest_state::StateError::TooManyWrites(u32::try_from(mib).unwrap_or(u32::MAX))
        }
    }
}

fn unavailable(e: state::StoreError) -> guest_state::StateError {
    guest_state::StateError::Unavailable(e.to_string())
}

type StateResult<T> = wasmtime::Result<Result<T, guest_state::StateError>>;

impl guest_state::Host for StepState {
    async fn get(&mut self, key: String) -> StateResult<Option<String>> {
        let call = self.call("state.get")?;
        if let Err(r) = state::check_key(&key) {
            return Ok(Err(refused(r)));
        }
        Ok(match call.state.get(&key).await {
            Ok(value) => Ok(value.map(state::Json::into_string)),
            Err(e) => Err(unavailable(e)),
        })
    }

    fn set(&mut self, key: String, value: String) -> StateResult<()> {
        let call = self.call("state.set")?;
        let checked = state::check_key(&key).and_then(|()| state::parse_value(&value));
        Ok(checked
            .and_then(|value| call.state.set(key, value))
            .map_err(refused))
    }

    fn delete(&mut self, key: String) -> StateResult<()> {
        let call = self.call("state.delete")?;
        Ok(state::check_key(&key)
            .and_then(|()| call.state.delete(key))
            .map_err(refused))
    }

    async fn commit(&mut self) -> StateResult<()> {
        let call = self.call("state.commit")?;
        Ok(call.state.commit().await.map_err(unavailable))
    }

    async fn list(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> StateResult<guest_state::Page> {
        let call = self.call("state.list")?;
        let limit = usize::try_from(limit).unwrap_or(state::MAX_PAGE);
        Ok(
            match call
                .state
                .list(&prefix, start_after.as_deref(), limit)
                .await
            {
                Ok(page) => Ok(guest_state::Page {
                    entries: page
                        .entries
                        .into_iter()
                        .map(|(key, value)| guest_state::Entry {
                            key,
                            value: value.into_string(),
                        })
                        .collect(),
                    next: page.next,
                }),
                Err(e) => Err(unavailable(e)),
            },
        )
    }
}

type PageResult<T> = wasmtime::Result<Result<T, guest_paged::PageError>>;

impl guest_paged::Host for StepState {
    fn length(&mut self, name: String) -> PageResult<u64> {
        let call = self.call("paged.length")?;
        Ok(match call.paged.get(&name) {
            Some(list) => Ok(list.len()),
            None => Err(guest_paged::PageError::UnknownList(name)),
        })
    }

    fn page(&mut self, name: String, start: u64, limit: u32) -> PageResult<String> {
        let call = self.call("paged.page")?;
        let Some(list) = call.paged.get(&name) else {
            return Ok(Err(guest_paged::PageError::UnknownList(name)));
        };
        Ok(list
            .page(start, paged::page_size(limit))
            .map_err(|e| guest_paged::PageError::BadItem(e.0)))
    }
}

impl guest_paged_output::Host for StepState {
    fn append(
        &mut self,
        name: String,
        items: String,
    ) -> wasmtime::Result<Result<(), guest_paged_output::AppendError>> {
        use guest_paged_output::AppendError;
        let call = self.call("paged-output.append")?;
        let appended = call
            .outputs
            .append(&name, &items)
            .map_err(wasmtime::Error::new)?;
        Ok(appended.map_err(|refused| match refused {
            AppendRefused::UnknownList(name) => AppendError::UnknownList(name),
            e @ AppendRefused::NotAList { .. } => AppendError::NotAList(e.to_string()),
            e @ AppendRefused::BadItem { .. } => AppendError::BadItem(e.to_string()),
        }))
    }
}
