//! How the farm's command and reply frames travel on a TCP connection: each one prefixed by
//! its length, 4 bytes big-endian, so that the reader knows where it ends and can refuse one
//! larger than its kind before reading it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// Writes `frame` with its length in front.
pub fn write(stream: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "frame too large"))?;
    let mut bytes = Vec::with_capacity(4 + frame.len());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(frame);
    stream.write_all(&bytes)?;
    stream.flush()
}

/// Reads one frame of at most `limit` bytes; `None` when the peer closed the connection
/// before sending any byte of it.
pub fn read(stream: &mut impl Read, limit: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0; 4];
    let mut got = 0;
    while got < len.len() {
        match stream.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("a frame of {len} bytes, more than the {limit} its kind may have"),
        ));
    }
    let mut frame = vec![0; len];
    stream.read_exact(&mut frame)?;
    Ok(Some(frame))
}

/// A stream read until a deadline: each read waits at most what is left, so a peer that
/// sends a byte now and then cannot hold the reader past the deadline.
pub struct Deadline<'a> {
    /// The stream read.
    pub stream: &'a TcpStream,
    /// When reading gives up.
    pub at: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_a_large_one_is_refused_unread() {
        let mut wire = Vec::new();
        write(&mut wire, b"hello").unwrap();
        assert_eq!(&wire[..4], &[0, 0, 0, 5]);
        assert_eq!(read(&mut &wire[..], 5).unwrap(), Some(b"hello".to_vec()));
        let error = read(&mut &wire[..], 4).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        assert_eq!(
            read(&mut &b""[..], 5).unwrap(),
            None,
            "closed before a frame"
        );
        let cut = read(&mut &wire[..6], 5).unwrap_err();
        assert_eq!(cut.kind(), ErrorKind::UnexpectedEof);
        let cut = read(&mut &wire[..2], 5).unwrap_err();
        assert_eq!(cut.kind(), ErrorKind::UnexpectedEof);
    }
}
