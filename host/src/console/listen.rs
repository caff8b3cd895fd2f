//! Where the console listens: the `--http` value (an IP address or a host
//! name, and a port) and the addresses it resolves to.
//!
//! A name is resolved once, at start; the loopback rule of [`super::access`]
//! holds for every address it resolves to, so a name that also points
//! somewhere else cannot open an untokened console to the network.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::access::AccessError;

/// The `--http` value as given: `HOST:PORT`, where HOST is an IPv4
/// address, a bracketed IPv6 address or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAddr {
    host: String,
    port: u16,
}

/// A `--http` value that is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; write HOST:PORT, e.g. 127.0.0.1:8700, localhost:8700 or [::1]:8700")]
pub struct AddrSyntaxError(String);

impl FromStr for HttpAddr {
    type Err = AddrSyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(AddrSyntaxError(format!(
                "`{s}` is a URL; give the address to listen on, without `{scheme}://` or a path"
            )));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| AddrSyntaxError(format!("`{s}` opens a `[` it does not close")))?;
            ip.parse::<Ipv6Addr>().map_err(|_| {
                AddrSyntaxError(format!("`{ip}` in brackets is not an IPv6 address"))
            })?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| AddrSyntaxError(format!("`{s}` has no port")))?;
            (ip, port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| AddrSyntaxError(format!("`{s}` has no port")))?;
            if host.contains(':') {
                return Err(AddrSyntaxError(format!(
                    "`{s}` looks like an IPv6 address without brackets"
                )));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(AddrSyntaxError(format!("`{s}` has no host")));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| AddrSyntaxError(format!("`{port}` is not a port (0 to 65535)")))?;
        Ok(HttpAddr {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HttpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for HttpAddr {
    fn from(addr: SocketAddr) -> Self {
        HttpAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl HttpAddr {
    /// The addresses the host stands for (an IP address stands for
    /// itself); a name that does not resolve is an error naming it.
    pub async fn resolve(&self) -> Result<Listen, AccessError> {
        let found = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|source| AccessError::Unresolved {
                    given: self.to_string(),
                    host: self.host.clone(),
                    source,
                })?
                .collect(),
        };
        Listen::resolved(&self.to_string(), found)
    }
}

/// Where the console may listen: the `--http` value and what it resolved
/// to, IPv4 addresses first.
#[derive(Debug, Clone)]
pub struct Listen {
    /// The value as given, for messages.
    pub given: String,
    addrs: Vec<SocketAddr>,
}

impl Listen {
    /// `given` standing for the addresses `found` (duplicates dropped); none
    /// is an error.
    pub fn resolved(given: &str, found: Vec<SocketAddr>) -> Result<Self, AccessError> {
        let given = given.to_string();
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in found {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(AccessError::NoAddress { given });
        }
        // The console binds one of them: an IPv4 one first (as Go's
        // `net.Listen` does), so `localhost` means `127.0.0.1`, the address
        // the documentation and the default use, whatever order the
        // resolver gives.
        addrs.sort_by_key(|a| !a.is_ipv4());
        Ok(Listen { given, addrs })
    }

    /// The resolved addresses, in the order they are tried.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Self {
        Listen {
            given: addr.to_string(),
            addrs: vec![addr],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Result<HttpAddr, String> {
        s.parse::<HttpAddr>().map_err(|e| e.to_string())
    }

    #[test]
    fn host_names_and_ip_addresses_parse() {
        for (given, host, port) in [
            ("127.0.0.1:8700", "127.0.0.1", 8700),
            ("localhost:0", "localhost", 0),
            ("[::1]:8700", "::1", 8700),
            ("console.example.com:80", "console.example.com", 80),
        ] {
            let addr = parsed(given).unwrap();
            assert_eq!((addr.host.as_str(), addr.port), (host, port), "{given}");
            assert_eq!(addr.to_string(), given);
        }
    }

    #[test]
    fn malformed_values_say_what_to_write() {
        for (given, says) in [
            ("localhost", "has no port"),
            (":8700", "has no host"),
            ("localhost:http", "is not a port"),
            ("localhost:70000", "is not a port"),
            ("::1:8700", "without brackets"),
            ("[::1:8700", "does not close"),
            ("[nope]:8700", "not an IPv6 address"),
            ("[::1]8700", "has no port"),
            (
                "http://127.0.0.1:8700/",
                "is a URL; give the address to listen on, without `http://`",
            ),
        ] {
            let e = parsed(given).unwrap_err();
            assert!(e.contains(says) && e.contains("HOST:PORT"), "{given}: {e}");
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_ipv4_first() {
        let listen = parsed("localhost:8700").unwrap().resolve().await.unwrap();
        assert!(!listen.addrs().is_empty());
        assert!(listen.addrs().iter().all(|a| a.ip().is_loopback()));
        assert!(listen.addrs()[0].is_ipv4() || listen.addrs().iter().all(|a| a.is_ipv6()));
        assert_eq!(listen.given, "localhost:8700");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_named() {
        // `.invalid` never resolves (RFC 2606).
        let e = parsed("no-such-host.invalid:8700")
            .unwrap()
            .resolve()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`no-such-host.invalid` does not resolve") && e.contains("127.0.0.1:8700"),
            "{e}"
        );
    }
}
