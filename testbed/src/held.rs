//! Long-lived TCP connections a client holds open to a [`crate::responder::Kind::TcpLines`]
//! service, opened together and checked together: a line sent on every connection, every
//! answer awaited at once, so that hundreds of connections are checked in one round trip and
//! a broken one costs the round its time-out once, not once each.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::netns::Netns;
use crate::socket;

/// A connection held open, and the node that has served it from the start.
#[derive(Debug)]
pub struct Held {
    /// The client's address and port.
    pub from: SocketAddr,
    /// The node that answered its first line.
    pub node: String,
    stream: TcpStream,
}

/// A connection that did not answer as it should, and what it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    /// The client's address and port.
    pub from: SocketAddr,
    /// What went wrong.
    pub why: String,
}

/// Opens a connection from each of `from` to `to` in `netns`, all at once, and asks each a
/// first line to learn which node serves it. Fails if any does not open or answer within
/// `timeout`.
pub fn open(
    netns: &Netns,
    from: &[SocketAddr],
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<Vec<Held>> {
    let streams = netns.run(|| {
        from.iter()
            .map(|&from| {
                socket::start_connect(from, to)
                    .with_context(|| format!("cannot connect from {from} to {to}"))
            })
            .collect::<anyhow::Result<Vec<TcpStream>>>()
    })??;
    let deadline = Instant::now() + timeout;
    for (stream, from) in streams.iter().zip(from) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the connection from {from} to {to} did not open within {timeout:?}");
            }
            let mut fds = [socket::pollfd(stream, libc::POLLOUT)];
            if socket::poll(&mut fds, left)? > 0 {
                socket::connect_result(stream)
                    .with_context(|| format!("the connection from {from} to {to}"))?;
                break;
            }
        }
    }
    let mut held: Vec<Held> = streams
        .into_iter()
        .zip(from)
        .map(|(stream, &from)| Held {
            from,
            node: String::new(),
            stream,
        })
        .collect();
    let answers = ask(&mut held, "hello", timeout);
    for (connection, answer) in held.iter_mut().zip(answers) {
        let answer = answer.map_err(|why| anyhow::anyhow!("{}: {why}", connection.from))?;
        let Some(node) = answer.strip_suffix(":hello") else {
            bail!(
                "{} was answered {answer:?}, not NAME:hello",
                connection.from
            );
        };
        connection.node = node.to_owned();
    }
    Ok(held)
}

/// Sends `text` on each of `held` and returns the connections whose answer, awaited for at
/// most `timeout` in all, is not `NODE:text` from the node that has served them.
pub fn broken(held: &mut [Held], text: &str, timeout: Duration) -> Vec<Broken> {
    let answers = ask(held, text, timeout);
    held.iter()
        .zip(answers)
        .filter_map(|(connection, answer)| {
            let expected = format!("{}:{text}", connection.node);
            let why = match answer {
                Ok(answer) if answer == expected => return None,
                Ok(answer) => format!("answered {answer:?}, not {expected:?}"),
                Err(why) => why,
            };
            Some(Broken {
                from: connection.from,
                why,
            })
        })
        .collect()
}

/// Sends the line `text` on each of `held` and reads one answer line from each, all at once,
/// for at most `timeout` in all.
fn ask(held: &mut [Held], text: &str, timeout: Duration) -> Vec<Result<String, String>> {
    let line = format!("{text}\n");
    let mut answers: Vec<Option<Result<String, String>>> = held
        .iter_mut()
        .map(|connection| {
            // A line is far smaller than a socket's buffer: it is written whole at once.
            match connection.stream.write(line.as_bytes()) {
                Ok(n) if n == line.len() => None,
                Ok(n) => Some(Err(format!("wrote {n} of {} bytes", line.len()))),
                Err(error) => Some(Err(format!("cannot send: {error}"))),
            }
        })
        .collect();
    let mut read: Vec<Vec<u8>> = vec![Vec::new(); held.len()];
    let deadline = Instant::now() + timeout;
    loop {
        let waiting: Vec<usize> = (0..held.len()).filter(|&i| answers[i].is_none()).collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if waiting.is_empty() || left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = waiting
            .iter()
            .map(|&i| socket::pollfd(&held[i].stream, libc::POLLIN))
            .collect();
        if let Err(error) = socket::poll(&mut fds, left) {
            let why = format!("poll: {error}");
            for &i in &waiting {
                answers[i] = Some(Err(why.clone()));
            }
            break;
        }
        for (fd, &i) in fds.iter().zip(&waiting) {
            if fd.revents != 0 {
                answers[i] = read_some(&mut held[i].stream, &mut read[i]);
            }
        }
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| Err(format!("no answer within {timeout:?}"))))
        .collect()
}

/// Reads what `stream` has into `read`; the line once it is whole, an error if the connection
/// ended or failed, nothing yet otherwise.
fn read_some(stream: &mut TcpStream, read: &mut Vec<u8>) -> Option<Result<String, String>> {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => Some(Err("closed by the other side".to_owned())),
        Ok(n) => {
            read.extend_from_slice(&buf[..n]);
            let end = read.iter().position(|&b| b == b'\n')?;
            let line = String::from_utf8_lossy(&read[..end]).into_owned();
            read.drain(..=end);
            Some(Ok(line))
        }
        Err(error) if error.kind() == ErrorKind::WouldBlock => None,
        Err(error) => Some(Err(format!("cannot receive: {error}"))),
    }
}
