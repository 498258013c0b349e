//! The HTTP side of the registry client: errors and which are worth
//! another try, a body read for exactly its bytes, and the small parsers
//! of headers (Content-Range, WWW-Authenticate) and URL encoding.

use std::io::{self, Read};

use crate::error::layer_error;

/// A failed request, with what to tell the user.
pub(super) fn err(msg: String) -> io::Error {
    layer_error(libc::EIO, msg)
}

/// A request that ran past its deadline: `TimedOut` (counted apart in
/// `rcfs stats`), EIO for the program.
pub fn timed_out(msg: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        crate::error::LayerError {
            errno: libc::EIO,
            cause: msg.into(),
        },
    )
}

/// Whether a TLS connection failed because the server spoke plain HTTP
/// (rustls's `InvalidContentType` on its first bytes): no retry helps.
pub(super) fn is_plain_http(e: &ureq::Error) -> bool {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("InvalidContentType") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Whether `e` is ureq's timeout, as it is or inside an `io::Error`.
pub(super) fn is_timeout(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Timeout(_) => true,
        ureq::Error::Io(io) => io.kind() == io::ErrorKind::TimedOut,
        _ => false,
    }
}

/// A body read for exactly `left` more bytes: it ends there whatever the
/// server sends after them, so a body that goes on forever costs nothing.
/// Its connection goes back to the pool only when the response's
/// Content-Length said just as much (ureq then ends the body without a
/// read of the socket); otherwise it is dropped with the reader.
pub(super) struct Exact<R> {
    pub(super) inner: R,
    pub(super) left: u64,
    /// Content-Length was what was asked for.
    pub(super) reusable: bool,
    /// For messages: the blob and range, and its deadline.
    pub(super) what: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            if std::mem::take(&mut self.reusable) {
                // Ends the body: ureq knows it has every byte, reads
                // nothing and pools the connection.
                let _ = self.inner.read(&mut [0u8; 1]);
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want]).map_err(|e| {
            let timeout = e.kind() == io::ErrorKind::TimedOut
                || e.get_ref()
                    .and_then(|i| i.downcast_ref::<ureq::Error>())
                    .is_some_and(is_timeout);
            if timeout {
                timed_out(format!(
                    "{}: the registry did not send it in time",
                    self.what
                ))
            } else {
                e
            }
        })?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// `bytes A-B/N` of a Content-Range header: `(A, B + 1)`.
pub(super) fn content_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v
        .trim()
        .strip_prefix("bytes ")?
        .split_once('/')?
        .0
        .split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    Some((a, b.checked_add(1)?))
}

/// Whether an HTTP status is worth another try.
pub(super) fn transient(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
pub(super) fn challenge_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            value = r[..end].to_owned();
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        rest = rest.trim_start_matches([',', ' ']);
        out.push((key, value));
    }
    out
}

pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
