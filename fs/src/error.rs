//! Errors keep their cause; the errno a program sees is decided at the FUSE
//! boundary ([`errno_of`]).
//!
//! Host syscalls fail with an `io::Error` that carries its errno, which goes
//! to the program as it is. A layer whose failure has no errno of its own (a
//! registry that cannot be reached, a chunk whose digest is wrong) makes its
//! error with [`layer_error`]: the program gets the errno given there (EIO),
//! and the log gets the whole cause.

use std::fmt;
use std::io;

/// A failure with a cause and the errno that programs are given for it.
#[derive(Debug)]
pub struct LayerError {
    pub errno: i32,
    pub cause: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cause)
    }
}

impl std::error::Error for LayerError {
    // The cause is what Display shows: its own source comes next, so that a
    // chain printed with `{:#}` names each cause once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// An io error for `cause` that programs see as `errno`.
pub fn layer_error(
    errno: i32,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> io::Error {
    io::Error::other(LayerError {
        errno,
        cause: cause.into(),
    })
}

/// The errno a program is given for `e`: its own, the one it was made with
/// ([`layer_error`]), or EIO.
pub fn errno_of(e: &io::Error) -> i32 {
    if let Some(n) = e.raw_os_error() {
        return n;
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<LayerError>()) {
        Some(l) => l.errno,
        None => libc::EIO,
    }
}

/// Whether `e` has a cause beyond an errno: worth a line in the log, since
/// the program only learns the errno.
pub fn has_cause(e: &io::Error) -> bool {
    e.raw_os_error().is_none()
}

/// An io error for `errno`.
pub(crate) fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_and_causes() {
        assert_eq!(errno_of(&errno(libc::ENOENT)), libc::ENOENT);
        let e = layer_error(libc::EIO, "registry 127.0.0.1:5000: connection refused");
        assert_eq!(errno_of(&e), libc::EIO);
        assert!(has_cause(&e));
        assert!(e.to_string().contains("connection refused"));
        assert_eq!(errno_of(&io::Error::other("plain")), libc::EIO);
    }
}
