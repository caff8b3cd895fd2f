//! A `sluice serve --http` or `sluice console` child for the console's
//! tests: its stderr collected as it comes, the console's address read
//! from it once the whole line has arrived, and the process killed when
//! dropped.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a child may take to say where its console listens: far more
/// than it needs, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(300);

pub struct ConsoleChild {
    child: Child,
    said: Arc<Mutex<String>>,
}

impl ConsoleChild {
    /// Starts `cmd` with its stderr collected and its stdout dropped.
    pub fn spawn(mut cmd: Command) -> ConsoleChild {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let said = Arc::new(Mutex::new(String::new()));
        let sink = said.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        ConsoleChild { child, said }
    }

    /// What the child wrote to stderr so far.
    pub fn said(&self) -> String {
        self.said.lock().unwrap().clone()
    }

    /// The console's address, once the child says where it listens.
    pub async fn console_addr(&mut self) -> SocketAddr {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let said = self.said();
            if let Some(rest) = said.split("console at http://").nth(1)
                && let Some((addr, _)) = rest.split_once('/')
            {
                return addr.parse().unwrap();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the console's process ended ({status}): {said}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the console never said where it listens in {PATIENCE:?}: {}",
            self.said()
        );
    }
}

impl Drop for ConsoleChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
