//! The web console: the run history, reports, the ledger and approvals in a browser,
//! served by `sluice serve --http ADDR` (beside the timer host, which also
//! gives it "run now") and `sluice console --http ADDR` (alone over a data
//! directory), with `/metrics`, `/healthz` and `/readyz` for operations.
//!
//! Pages are rendered on the server from templates compiled into the
//! binary; the only script updates a running run's steps. Nothing is
//! fetched from elsewhere, so the console works without a network.
//!
//! - [`access`]: who may listen where, tokens, sessions, CSRF values
//! - [`listen`]: the `--http` value (an IP address or a host name) resolved
//! - [`peer`]: which local account opened a connection to an open console
//! - [`guard`]: the middleware every request passes (host and account
//!   checks, sign-in, origin and CSRF, security headers)
//! - [`data`]: every read from the storage layer
//! - [`extract`]: paths, queries and forms, refused with the console's own page
//! - [`pages`], [`run_page`], [`approvals`], [`session`], [`ops`]: the routes
//! - [`view`]: templates and formatting; [`words`]: schedules in words
//! - [`metrics`]: the Prometheus metrics, following the history

pub mod access;
pub mod approvals;
pub mod data;
pub mod extract;
pub mod guard;
pub mod listen;
pub mod metrics;
pub mod ops;
pub mod pages;
pub mod peer;
pub mod run_page;
pub mod session;
pub mod view;
pub mod words;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use sluice_store::Location;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::access::{AccessError, CsrfKey, Token};
use self::data::Data;
use self::listen::Listen;
use self::metrics::Metrics;
use self::peer::{Peer, PeerListener};
use crate::scheduler::control::{Control, ServedFlow};

/// The address the console listens on unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8700";

/// How long open connections (live pages) get to close when the console
/// stops, before they are cut.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How the console is asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where to listen, resolved and checked against the token rule.
    pub listen: Listen,
    pub token: Option<Token>,
    /// `/metrics`, `/healthz` and `/readyz` without the token on any address.
    pub metrics_public: bool,
    /// The store holding the run history.
    pub database: Location,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Access(#[from] AccessError),
    // Not `source`: the message says the cause once, and a chain would
    // say it again ("Address already in use: Address already in use").
    #[error("the console cannot listen on {given}: {cause}")]
    Bind {
        given: String,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] sluice_store::StoreError),
    #[error("the console's metrics could not be set up: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Tells the operator something about the console: as a `console_notice`
/// event of `sluice serve`'s log (in its format, text or JSON) when the
/// console runs inside it, else as a line on stderr.
pub(crate) fn notice(message: &str) {
    if crate::cli::log_lines::started() {
        tracing::warn!(event = "console_notice", "{message}");
    } else {
        eprintln!("{message}");
    }
}

/// What the routes share.
pub struct Console {
    data: Data,
    token: Option<Token>,
    /// `/metrics` and `/healthz` need no token.
    operations_open: bool,
    os_user: String,
    /// The uid this process runs as: on an open console, only it and root
    /// may use the console ([`peer`]).
    os_uid: u32,
    /// Signs the CSRF values of this console's forms.
    csrf_key: CsrfKey,
    metrics: Metrics,
    /// The timer host's handle, under `sluice serve --http`.
    scheduler: Option<Control>,
    /// Flow files given to `sluice console` to describe their schedules.
    described: Vec<ServedFlow>,
    /// Sessions signed out here before they expired.
    signed_out: access::SignedOut,
}

impl Console {
    /// The flows served here (or described, without a scheduler).
    fn known_flows(&self) -> Vec<ServedFlow> {
        match &self.scheduler {
            Some(control) => control.flows(),
            None => self.described.clone(),
        }
    }
}

/// A console that is serving.
pub struct Running {
    /// Where it listens (the port is known even when 0 was asked for).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The line that says where a console listens: its URL, and `note`
/// ([`Running::where_to_open`]) when that is not what to open.
pub fn listening_line(url: &str, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("console at {url} ({note})"),
        None => format!("console at {url}"),
    }
}

impl Running {
    /// The console's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// What to open, when the URL is not it: listening on every address of
    /// the host (`0.0.0.0`, `[::]`), the console is not at that address.
    pub fn where_to_open(&self) -> Option<String> {
        self.addr.ip().is_unspecified().then(|| {
            format!(
                "every address of this host: open http://localhost:{}/ here, or this host's name or address and port {} from elsewhere",
                self.addr.port(),
                self.addr.port()
            )
        })
    }

    /// Stops listening; open connections get a moment to close.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_GRACE, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// The routes, behind the guard.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(pages::flows))
        .route("/flows/{name}/run", post(pages::run_now))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(run_page::run))
        .route("/runs/{id}/live", get(run_page::live))
        .route("/runs/{id}/files/{name}", get(run_page::file))
        .route("/ledger", get(pages::ledger))
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::plan))
        .route("/approvals/{id}/decide", post(approvals::decide))
        .route("/login", get(session::form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/static/{name}", get(ops::asset))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            console.clone(),
            guard::guard,
        ))
        // The handlers read what the guard let through, within the same
        // bound (axum's own default differs, and answers in plain text).
        .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_FORM_BYTES))
        .with_state(console)
}

/// Checks the address against the token rule, opens the history, binds,
/// and serves until [`Running::stop`].
pub async fn start(
    options: Options,
    scheduler: Option<Control>,
    described: Vec<ServedFlow>,
) -> Result<Running, ConsoleError> {
    access::check_address(&options.listen, options.token.as_ref())?;
    let data = Data::open(&options.database).await?;
    let bind_error = |cause| ConsoleError::Bind {
        given: options.listen.given.clone(),
        cause,
    };
    // The first of the resolved addresses that binds.
    let listener = tokio::net::TcpListener::bind(options.listen.addrs())
        .await
        .map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let csrf_key = match &options.token {
        Some(token) => CsrfKey::for_token(token),
        None => CsrfKey::random(),
    };
    let find_owner = options.token.is_none();
    let console = Arc::new(Console {
        data,
        token: options.token,
        operations_open: addr.ip().is_loopback() || options.metrics_public,
        os_user: access::os_user(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        os_uid: unsafe { libc::geteuid() },
        csrf_key,
        metrics: Metrics::new()?,
        scheduler,
        described,
        signed_out: access::SignedOut::default(),
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let listener = PeerListener::new(listener, find_owner);
    let app = router(console).into_make_service_with_connect_info::<Peer>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = served.await {
            notice(&format!("console: stopped serving: {e}"));
        }
    });
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}
