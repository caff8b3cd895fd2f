//! Which local account is at the other end of a connection to an open
//! console.
//!
//! Without a token, loopback is the console's only gate, and every account
//! on the machine can reach loopback. So an open console looks each
//! accepted connection up, once, in the kernel's socket tables
//! (`/proc/net/tcp`, `/proc/net/tcp6`): the client's own socket is the row
//! whose local address is the peer's and whose remote address is the
//! console's, and its uid is the account that opened it (as `identd` finds
//! it). The guard lets only the console's own account and root through;
//! a connection whose account cannot be found is refused too.

use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use procfs_core::net::TcpNetEntries;
use procfs_core::{ExplicitSystemInfo, FromReadSI};
use tokio::net::{TcpListener, TcpStream};

/// The kernel's tables of TCP sockets, IPv4 then IPv6 (an IPv6 socket may
/// hold an IPv4-mapped address, so both are searched).
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// The account behind a connection, as far as the console looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The uid that opened the client's socket.
    Uid(u32),
    /// It was looked for and not found; why, for the refusal page.
    Unknown(String),
    /// Not looked for: a console with a token authenticates by the token.
    NotChecked,
}

/// A connection's peer: its address and account. Handlers and the guard
/// read it as `ConnectInfo<Peer>`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub owner: Owner,
}

impl Connected<IncomingStream<'_, PeerListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PeerListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener that finds each connection's [`Owner`] as it accepts
/// it, when asked to (an open console).
pub struct PeerListener {
    inner: TcpListener,
    find_owner: bool,
}

impl PeerListener {
    pub fn new(inner: TcpListener, find_owner: bool) -> Self {
        PeerListener { inner, find_owner }
    }
}

impl Listener for PeerListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let owner = if self.find_owner {
            match io.local_addr() {
                Ok(ours) => tokio::task::spawn_blocking(move || owner_of(addr, ours))
                    .await
                    .unwrap_or_else(|e| Owner::Unknown(format!("the look-up failed: {e}"))),
                Err(e) => Owner::Unknown(format!("the console's own address is unknown: {e}")),
            }
        } else {
            Owner::NotChecked
        };
        (io, Peer { addr, owner })
    }

    /// The console's own address (its owner is not looked up).
    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.inner.local_addr()?,
            owner: Owner::NotChecked,
        })
    }
}

/// The account that opened the client socket of the connection from
/// `peer` to `ours`, from the kernel's tables.
fn owner_of(peer: SocketAddr, ours: SocketAddr) -> Owner {
    let mut problems = Vec::new();
    for table in TABLES {
        match std::fs::read_to_string(table) {
            Ok(text) => match socket_owner(&text, peer, ours) {
                Ok(Some(uid)) => return Owner::Uid(uid),
                Ok(None) => {}
                Err(e) => problems.push(format!("{table}: {e}")),
            },
            Err(e) => problems.push(format!("{table}: {e}")),
        }
    }
    if problems.is_empty() {
        Owner::Unknown("no socket of this machine holds the connection's other end".to_string())
    } else {
        Owner::Unknown(format!("cannot read {}", problems.join("; ")))
    }
}

/// The uid of the socket in `table` (the text of `/proc/net/tcp` or
/// `tcp6`) whose local address is `peer` and whose remote address is
/// `ours`. A row without an inode (`TIME_WAIT`, or a socket its process
/// let go of) belongs to no one and is passed over: its uid reads 0.
pub fn socket_owner(
    table: &str,
    peer: SocketAddr,
    ours: SocketAddr,
) -> Result<Option<u32>, procfs_core::ProcError> {
    let system = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let rows = TcpNetEntries::from_read(table.as_bytes(), &system)?;
    let (peer, ours) = (canonical(peer), canonical(ours));
    Ok(rows
        .0
        .iter()
        .find(|row| {
            row.inode != 0
                && canonical(row.local_address) == peer
                && canonical(row.remote_address) == ours
        })
        .map(|row| row.uid))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_clients_row_names_its_uid() {
        // The console listening on 127.0.0.1:8700 (0x21FC), its side of
        // the connection, and the client's side from 127.0.0.1:40000
        // (0x9C40), opened by uid 1000. A TIME_WAIT row of an earlier
        // connection from the same port reads uid 0 and inode 0.
        let table = format!(
            "{HEADER}   0: 0100007F:21FC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 906115 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:21FC 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 906200 1 0000000000000000 20 4 30 10 -1\n   2: 0100007F:9C40 0100007F:21FC 01 00000000:00000000 00:00000000 00000000  1000        0 906199 1 0000000000000000 20 4 30 10 -1\n"
        );
        let (peer, ours) = (addr("127.0.0.1:40000"), addr("127.0.0.1:8700"));
        assert_eq!(socket_owner(&table, peer, ours).unwrap(), Some(1000));
        // Not the console's side of it (uid 0, the console's own socket).
        assert_eq!(socket_owner(&table, ours, peer).unwrap(), Some(0));
        assert_eq!(
            socket_owner(&table, addr("127.0.0.1:40001"), ours).unwrap(),
            None
        );
        let time_wait = format!(
            "{HEADER}   0: 0100007F:9C40 0100007F:21FC 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000\n"
        );
        assert_eq!(socket_owner(&time_wait, peer, ours).unwrap(), None);
    }

    #[test]
    fn ipv4_words_are_little_endian_and_ipv6_rows_are_found_too() {
        // 127.1.2.3 is 0x7F010203, printed little-endian as 0302017F.
        let table = format!(
            "{HEADER}   0: 0302017F:9C40 0100007F:21FC 01 00000000:00000000 00:00000000 00000000  1001        0 5 1 0000000000000000 20 4 30 10 -1\n"
        );
        let got = socket_owner(&table, addr("127.1.2.3:40000"), addr("127.0.0.1:8700"));
        assert_eq!(got.unwrap(), Some(1001));
        // ::1 is four words 0,0,0,1; the last printed little-endian.
        // An IPv4-mapped client (::ffff:127.0.0.1) is found by its IPv4 address.
        let table6 = format!(
            "{HEADER}   0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:21FC 01 00000000:00000000 00:00000000 00000000  1002        0 6 1 0000000000000000 20 4 30 10 -1\n   1: 0000000000000000FFFF00000100007F:9C41 0000000000000000FFFF00000100007F:21FC 01 00000000:00000000 00:00000000 00000000  1003        0 7 1 0000000000000000 20 4 30 10 -1\n"
        );
        let got = socket_owner(&table6, addr("[::1]:40000"), addr("[::1]:8700"));
        assert_eq!(got.unwrap(), Some(1002));
        let got = socket_owner(&table6, addr("127.0.0.1:40001"), addr("127.0.0.1:8700"));
        assert_eq!(got.unwrap(), Some(1003));
    }

    #[test]
    fn a_garbled_table_is_an_error_not_a_guess() {
        let table = format!("{HEADER}   0: nonsense\n");
        let got = socket_owner(&table, addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        assert!(got.is_err());
    }

    #[test]
    fn this_processs_own_connection_is_found_with_its_uid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(ours).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        assert_eq!(owner_of(peer, ours), Owner::Uid(me));
    }
}
