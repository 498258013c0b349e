//! A container's network: its own by default (a network namespace that
//! slirp4netns, or pasta with `--net pasta`, connects to the host's),
//! `--net host` and `--net none`; `-p` publishes a port the host reaches on
//! loopback; the container reaches a
//! service on the host's loopback as `host.containers.internal`; its
//! `/etc/hosts` (hostname, `--add-host`) and `/etc/resolv.conf` (`--dns`).
//! As root and as an unprivileged user. Only loopback addresses and
//! namespaces made here are used.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::containers::{code, Fixture};
use crate::harness::temp_dir;

/// A port free on the host's loopback now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /PATH` from 127.0.0.1:PORT, retried until it answers (60 s).
fn http_get(port: u16, path: &str) -> String {
    let t0 = Instant::now();
    loop {
        let got = TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            write!(s, "GET /{path} HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        });
        match got {
            Ok(text) if text.starts_with("HTTP/") => return text,
            r => assert!(
                t0.elapsed() < Duration::from_secs(60),
                "127.0.0.1:{port} never answered: {r:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The inode of this process's network namespace, as `readlink` shows it.
fn host_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn a_container_has_a_network_of_its_own_by_default() {
    let f = Fixture::new(150, "gzip");
    let img = f.image.as_str();
    let home = temp_dir();
    let show = [
        img,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox readlink /proc/self/ns/net; /bin/busybox ls /sys/class/net; \
         /bin/busybox ip route",
    ];
    for who in ["root", "user"] {
        let r = match who {
            "root" => f.run(&[&["--rm"], &show[..]].concat()),
            _ => f.run_rootless(home.path(), &[&["--rm"], &show[..]].concat()),
        };
        assert_eq!(code(&r), Some(0), "{who}: {}", r.stderr);
        let mut lines = r.stdout.lines();
        let ns = lines.next().unwrap();
        assert_ne!(ns, host_netns(), "{who}: the host's network namespace");
        let rest: Vec<&str> = lines.collect();
        // Its loopback and the interface pasta made, with a default route.
        assert!(rest.contains(&"lo"), "{who}: {rest:?}");
        let ifaces: Vec<&&str> = rest
            .iter()
            .take_while(|l| !l.contains(' '))
            .filter(|l| **l != "lo")
            .collect();
        assert_eq!(ifaces.len(), 1, "{who}: one interface besides lo: {rest:?}");
        assert!(
            rest.iter().any(|l| l.starts_with("default via")),
            "{who}: no default route: {rest:?}"
        );
    }

    // --net host: the host's namespace; --net none: a loopback alone.
    let r = f.run(&[
        "--rm",
        "--net",
        "host",
        img,
        "/bin/busybox",
        "readlink",
        "/proc/self/ns/net",
    ]);
    assert_eq!(r.stdout.trim(), host_netns(), "{}", r.stderr);
    let r = f.run(&[
        "--rm",
        "--net",
        "none",
        img,
        "/bin/busybox",
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(r.stdout, "lo\n", "{}", r.stderr);

    // -p with the host's network or none: refused, saying why.
    for net in ["host", "none"] {
        let r = f.run(&["--rm", "--net", net, "-p", "8080:80", img, "true"]);
        assert_eq!(code(&r), Some(125));
        assert!(r.stderr.contains("-p publishes ports"), "{}", r.stderr);
    }
    let r = f.run(&["--rm", "--net", "slirp", img, "true"]);
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
}

#[test]
fn a_published_port_serves_the_host_and_the_container_reaches_the_hosts_loopback() {
    let f = Fixture::new(151, "gzip");
    let img = f.image.as_str();
    let home = temp_dir();
    // slirp4netns (the default: rcfs forwards the ports) and pasta.
    for (who, net) in [
        ("root", "private"),
        ("user", "private"),
        ("root", "pasta"),
        ("user", "pasta"),
    ] {
        // The container's httpd, published on the host's loopback.
        let port = free_port();
        let name = format!("web-{who}-{net}");
        let publish = format!("127.0.0.1:{port}:8080");
        let args = [
            "-d",
            "--net",
            net,
            "--name",
            &name,
            "-p",
            &publish,
            img,
            "/bin/busybox",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/usr/share/data",
        ];
        let rcfs = |a: &[&str]| match who {
            "root" => f.rcfs(a),
            _ => f.rcfs_rootless(home.path(), a),
        };
        let r = rcfs(&[&["run", "--tls-verify=false"], &args[..]].concat());
        assert_eq!(code(&r), Some(0), "{who}: {}", r.stderr);
        let page = http_get(port, "f001");
        assert!(page.contains("small file 1 of 151"), "{who}: {page}");
        let r = rcfs(&["inspect", &name]);
        let mode = if net == "pasta" {
            "pasta"
        } else {
            "slirp4netns"
        };
        assert!(
            r.stdout.contains(&format!("\"NetworkMode\": \"{mode}\"")),
            "{who}: {}",
            r.stdout
        );
        rcfs(&["kill", &name]).expect_ok("kill");
        rcfs(&["wait", &name]);
        // Gone with the container: nothing listens there any more.
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{who}: port {port} still open after the container ended"
        );

        // A service on the host's loopback, reached from the container.
        let host = TcpListener::bind("127.0.0.1:0").unwrap();
        let hport = host.local_addr().unwrap().port();
        let served = std::thread::spawn(move || {
            let (mut s, _) = host.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nfrom host\n")
                .unwrap();
        });
        let url = format!("http://host.containers.internal:{hport}/");
        let wget = |net: &str| {
            let a = [
                "--rm",
                "--net",
                net,
                img,
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &url,
            ];
            match who {
                "root" => f.run(&a),
                _ => f.run_rootless(home.path(), &a),
            }
        };
        // Not by default: the host's loopback is the caller's.
        let r = wget(net);
        assert_ne!(
            code(&r),
            Some(0),
            "{who} {net}: reached the host's loopback"
        );
        // When asked, as podman's options say it.
        let allow = if net == "pasta" {
            "pasta:--map-gw"
        } else {
            "slirp4netns:allow_host_loopback=true"
        };
        let r = wget(allow);
        assert_eq!(code(&r), Some(0), "{who} {allow}: {}", r.stderr);
        assert_eq!(r.stdout, "from host\n", "{who}");
        served.join().unwrap();
    }
}

#[test]
fn hosts_and_resolv_conf_name_what_podman_names() {
    let f = Fixture::new(152, "gzip");
    let img = f.image.as_str();
    let r = f.run(&[
        "--rm",
        "--hostname",
        "box",
        "--add-host",
        "db.example:10.1.2.3",
        "--dns",
        "192.0.2.53",
        img,
        "/bin/busybox",
        "sh",
        "-c",
        "/bin/busybox cat /etc/hosts /etc/resolv.conf; /bin/busybox hostname",
    ]);
    assert_eq!(code(&r), Some(0), "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let has = |want: &[&str]| {
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().starts_with(want))
    };
    assert!(has(&["127.0.0.1", "localhost"]), "{}", r.stdout);
    assert!(lines.iter().any(|l| l.ends_with("\tbox")), "{}", r.stdout);
    assert!(has(&["10.1.2.3", "db.example"]), "{}", r.stdout);
    assert!(
        lines.iter().any(|l| l.contains("host.containers.internal")),
        "{}",
        r.stdout
    );
    assert!(has(&["nameserver", "192.0.2.53"]), "{}", r.stdout);
    assert_eq!(lines.last(), Some(&"box"));

    // Bad values: refused before anything runs.
    for bad in [
        &["--add-host", "nocolon"][..],
        &["--add-host", "x:notanip"],
        &["--dns", "dns.example"],
        &["-p", "80"],
        &["-p", "1:2/sctp"],
    ] {
        let r = f.run(&[&["--rm"], bad, &[img, "true"]].concat());
        assert_eq!(code(&r), Some(125), "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains("invalid"), "{bad:?}: {}", r.stderr);
    }

    // Without pasta: an error that says what to install.
    let mut c = std::process::Command::new(crate::mounts::RCFS);
    c.args(["--root", f.store().to_str().unwrap(), "run", "--rm"])
        .args(["--tls-verify=false", img, "true"])
        .env("PATH", "/nonexistent");
    let r = crate::mounts::run(&mut c, Duration::from_secs(120));
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(
        r.stderr.contains("apt-get install slirp4netns"),
        "{}",
        r.stderr
    );
    let mut c = std::process::Command::new(crate::mounts::RCFS);
    c.args(["--root", f.store().to_str().unwrap(), "run", "--rm"])
        .args(["--net", "pasta", "--tls-verify=false", img, "true"])
        .env("PATH", "/nonexistent");
    let r = crate::mounts::run(&mut c, Duration::from_secs(120));
    assert_eq!(code(&r), Some(125), "{}", r.stderr);
    assert!(r.stderr.contains("apt-get install passt"), "{}", r.stderr);
}
