//! The registry client against small servers on loopback that answer as
//! registries do, and as lying or stalling ones do.

use super::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

/// A server on loopback that hands each connection to `serve` (one
/// thread per connection); counts connections.
fn server(serve: impl Fn(TcpStream) + Copy + Send + 'static) -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let conns = Arc::new(AtomicU64::new(0));
    let c = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(s));
        }
    });
    (port, conns)
}

/// A server on loopback that reads each request's head and answers
/// with `answer`; counts connections.
fn lying_server(answer: fn(&mut TcpStream, &str)) -> (u16, Arc<AtomicU64>) {
    server(move |mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        answer(&mut s, &String::from_utf8_lossy(&head));
    })
}

fn client(port: u16, deadline: Duration) -> Arc<Registry> {
    let r = Reference::parse(&format!("127.0.0.1:{port}/lies:v1"), "docker.io").unwrap();
    Arc::new(Registry::new(
        &r,
        ClientOptions {
            insecure: true,
            attempts: 2,
            backoff: Duration::from_millis(10),
            deadline,
            ..Default::default()
        },
    ))
}

fn blob_of(reg: Arc<Registry>) -> RegistryBlob {
    RegistryBlob {
        registry: reg,
        digest: Digest::of(b"x"),
    }
}

/// Writes until the client goes away.
fn forever(s: &mut TcpStream) {
    let junk = [b'j'; 4096];
    while s.write_all(&junk).is_ok() {}
}

#[test]
fn a_range_is_read_for_its_bytes_however_long_the_body_goes_on() {
    // No Content-Length: the body would end only when the socket does.
    let (port, _) = lying_server(|s, _| {
        let _ = s.write_all(
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\n\r\n0123456789",
        );
        forever(s);
    });
    let t0 = Instant::now();
    let got = blob_of(client(port, Duration::from_secs(20)))
        .read_range(10, 20)
        .unwrap();
    assert_eq!(got, b"0123456789");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // The same with a Content-Length that says more than was asked.
    let (port, _) = lying_server(|s, _| {
        let _ = s.write_all(
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 999999999\r\n\r\n0123456789",
        );
        forever(s);
    });
    let got = blob_of(client(port, Duration::from_secs(20)))
        .read_range(10, 20)
        .unwrap();
    assert_eq!(got, b"0123456789");
    // A range answered for other bytes is refused.
    let (port, _) = lying_server(|s, _| {
        let _ = s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\nContent-Length: 10\r\n\r\n0123456789");
    });
    let err = blob_of(client(port, Duration::from_secs(20)))
        .read_range(10, 20)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("answered with range 'bytes 0-9/100'"),
        "{err}"
    );
}

#[test]
fn a_registry_that_stalls_costs_a_request_its_deadline_not_more() {
    // Stalls after the head, and after part of the body.
    for answer in [
        (|s: &mut TcpStream, _: &str| {
            let _ = s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n");
            std::thread::sleep(Duration::from_secs(60));
        }) as fn(&mut TcpStream, &str),
        |s, _| {
            let _ = s.write_all(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\n01234");
            std::thread::sleep(Duration::from_secs(60));
        },
        |_, _| std::thread::sleep(Duration::from_secs(60)),
    ] {
        let (port, conns) = lying_server(answer);
        let t0 = Instant::now();
        let err = blob_of(client(port, Duration::from_millis(700)))
            .read_range(10, 20)
            .unwrap_err();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}: {err}");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert_eq!(crate::error::errno_of(&err), libc::EIO);
        assert!(
            conns.load(Ordering::SeqCst) <= 2,
            "retries stay within the deadline"
        );
    }
}

#[test]
fn a_registry_that_asks_to_wait_past_the_deadline_fails_the_request_at_once() {
    // 503 with Retry-After of an hour (rcfs waits at most 30 s): a read
    // whose request has 2 s left fails now, instead of sleeping in the
    // READ until its deadline.
    let (port, conns) = lying_server(|s, _| {
        let _ = s.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n",
        );
    });
    let t0 = Instant::now();
    let err = blob_of(client(port, Duration::from_secs(2)))
        .read_range(10, 20)
        .unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}: {err}",
        t0.elapsed()
    );
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(
        err.to_string().contains("no time left to try again"),
        "{err}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1);

    // A pause that fits is taken, and the request tried again.
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let (port, conns) = lying_server(|s, _| {
        let answer: &[u8] = if SEEN.fetch_add(1, Ordering::SeqCst) == 0 {
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-19/100\r\nContent-Length: 10\r\n\r\n0123456789"
        };
        let _ = s.write_all(answer);
    });
    let t0 = Instant::now();
    let got = blob_of(client(port, Duration::from_secs(20)))
        .read_range(10, 20)
        .unwrap();
    assert_eq!(got, b"0123456789");
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[test]
fn oversize_manifests_are_refused_without_reading_them() {
    // A Content-Length over the limit: refused at once.
    let (port, _) = lying_server(|s, _| {
        let _ = s.write_all(
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 1u64 << 40).as_bytes(),
        );
        forever(s);
    });
    let err = client(port, Duration::from_secs(20))
        .manifest("v1")
        .unwrap_err();
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
    // No Content-Length and no end: refused past the limit.
    let (port, _) = lying_server(|s, _| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        forever(s);
    });
    let t0 = Instant::now();
    let err = client(port, Duration::from_secs(20))
        .manifest("v1")
        .unwrap_err();
    assert!(err.to_string().contains("larger than 4 MiB"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(content_range(" bytes 5-9/100"), Some((5, 10)));
    assert_eq!(content_range("bytes 5-18446744073709551615/*"), None);
}

#[test]
fn reads_bearer_challenges() {
    let p = challenge_params(
        r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull,push""#,
    );
    assert_eq!(
        p[0],
        ("realm".into(), "https://auth.docker.io/token".into())
    );
    assert_eq!(p[1], ("service".into(), "registry.docker.io".into()));
    assert_eq!(
        p[2],
        ("scope".into(), "repository:library/debian:pull,push".into())
    );
    assert_eq!(
        url_encode("repository:a/b:pull"),
        "repository%3Aa%2Fb%3Apull"
    );
    assert!(transient(503) && transient(429) && !transient(404));
}

#[test]
fn a_registry_that_answers_tls_in_plain_http_is_told_at_once_not_retried() {
    // What an HTTP-only registry sends back to a TLS ClientHello.
    let (port, conns) = server(|mut s| {
        let mut hello = [0u8; 512];
        let _ = s.read(&mut hello);
        let _ = s.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        );
    });
    let r = Reference::parse(&format!("127.0.0.1:{port}/plain:v1"), "docker.io").unwrap();
    let reg = Arc::new(Registry::new(
        &r,
        ClientOptions {
            attempts: 5,
            backoff: Duration::from_millis(200),
            ..Default::default()
        },
    ));
    let e = blob_of(reg).read_range(0, 10).unwrap_err().to_string();
    assert!(
        e.contains("plain HTTP") && e.contains("--tls-verify=false"),
        "{e}"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 1, "tried again: {e}");
}
