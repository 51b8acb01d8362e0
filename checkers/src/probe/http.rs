//! `http`: a GET of a URL on the node answers with a status in a range, and optionally a body
//! that holds a given text.
//!
//! A plain HTTP/1.0 client of a few lines: the URL is the node's own application, on a local
//! address, so there is no TLS, no redirect and no proxy to follow, and a general HTTP client
//! crate would bring far more than this needs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{ProbeError, Probed};

/// The most of an answer that is read: a health page is small.
const MAX_ANSWER: u64 = 1 << 20;

/// What an `http` check expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The lowest and highest status accepted.
    pub status: (u16, u16),
    /// A text the body must hold.
    pub body: Option<String>,
}

/// Whether a GET of `url` (`http://HOST[:PORT][/PATH]`) answers as `expect` says within
/// `timeout`.
pub fn http(url: &str, expect: &Expect, timeout: Duration) -> Probed {
    let (host, port, path) = parse(url)?;
    let deadline = Instant::now() + timeout;
    let address: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| ProbeError::new(format!("{url}: cannot resolve {host}")))?;
    let failed =
        |what: &str, error: std::io::Error| ProbeError::new(format!("{url}: {what}: {error}"));
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| failed("cannot connect", e))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left()))
        .map_err(|e| failed("socket", e))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: herd-check\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| failed("cannot send the request", e))?;
    let mut answer = Vec::new();
    let mut reader = stream.take(MAX_ANSWER);
    let mut buffer = [0u8; 8192];
    loop {
        reader
            .get_ref()
            .set_read_timeout(Some(left()))
            .map_err(|e| failed("socket", e))?;
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed("no whole answer", e)),
        }
    }
    check(url, &answer, expect)
}

/// `http://HOST[:PORT][/PATH]` as host, port and path.
fn parse(url: &str) -> Result<(String, u16, String), ProbeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::new(format!("{url}: not an http:// URL")))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let (host, port) = match authority.rsplit_once(':') {
        // An IPv6 literal: [::1] or [::1]:8080.
        Some((host, port)) if !port.contains(']') => (
            host,
            port.parse()
                .map_err(|_| ProbeError::new(format!("{url}: port {port:?} is not a number")))?,
        ),
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ProbeError::new(format!("{url}: no host")));
    }
    Ok((host.to_owned(), port, path.to_owned()))
}

/// Whether `answer` is what `expect` says.
fn check(url: &str, answer: &[u8], expect: &Expect) -> Probed {
    let text = String::from_utf8_lossy(answer);
    let status_line = text.lines().next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/"))
        .ok_or_else(|| ProbeError::new(format!("{url}: not an HTTP answer: {status_line:?}")))?;
    let (low, high) = expect.status;
    if !(low..=high).contains(&status) {
        return Err(ProbeError::new(format!(
            "{url}: status {status}, expected {low}-{high}"
        )));
    }
    if let Some(wanted) = &expect.body {
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        if !body.contains(wanted.as_str()) {
            return Err(ProbeError::new(format!(
                "{url}: the body does not hold {wanted:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_into_host_port_and_path() {
        let parsed = |url| parse(url).unwrap();
        assert_eq!(
            parsed("http://198.18.0.1"),
            ("198.18.0.1".into(), 80, "/".into())
        );
        assert_eq!(
            parsed("http://198.18.0.1:8080/health?x=1"),
            ("198.18.0.1".into(), 8080, "/health?x=1".into())
        );
        assert_eq!(
            parsed("http://[2001:2::1]:81/"),
            ("2001:2::1".into(), 81, "/".into())
        );
        assert_eq!(
            parsed("http://[2001:2::1]/a"),
            ("2001:2::1".into(), 80, "/a".into())
        );
        assert!(parse("https://198.18.0.1/").is_err());
        assert!(parse("http://:80/").is_err());
        assert!(parse("http://198.18.0.1:http/").is_err());
    }

    #[test]
    fn answers_are_held_to_the_status_range_and_the_body() {
        let expect = Expect {
            status: (200, 399),
            body: Some("ok".into()),
        };
        let answer = |text: &str| check("u", text.as_bytes(), &expect);
        assert!(answer("HTTP/1.1 200 OK\r\nA: b\r\n\r\nall ok\n").is_ok());
        assert_eq!(
            answer("HTTP/1.1 503 Busy\r\n\r\nok").unwrap_err().0,
            "u: status 503, expected 200-399"
        );
        assert!(answer("HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap_err()
            .0
            .contains("does not hold"));
        assert!(answer("SSH-2.0-OpenSSH\r\n")
            .unwrap_err()
            .0
            .contains("not an HTTP answer"));
        assert!(answer("").is_err());
    }
}
