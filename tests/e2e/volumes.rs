//! Named volumes (`rcfs volume create/ls/rm`, `-v NAME:/path`), `--mount
//! type=bind|volume|tmpfs`, `--device` and `--shm-size`, as podman has
//! them; as root and as an unprivileged user.

use crate::containers::{code, Fixture};
use crate::harness::temp_dir;

#[test]
fn volumes_outlive_containers_and_mounts_do_what_they_say() {
    let f = Fixture::new(160, "gzip");
    let img = f.image.as_str();
    let home = temp_dir();
    for who in ["root", "user"] {
        let rcfs = |a: &[&str]| match who {
            "root" => f.rcfs(a),
            _ => f.rcfs_rootless(home.path(), a),
        };
        let run = |a: &[&str]| rcfs(&[&["run", "--tls-verify=false"], a].concat());
        rcfs(&["volume", "create", "data"]).expect_ok("volume create");
        let r = rcfs(&["volume", "create", "data"]);
        assert_ne!(code(&r), Some(0), "{who}: made twice");
        // Written by one container, read by the next; read-only there.
        let r = run(&[
            "--rm",
            "-v",
            "data:/data",
            img,
            "/bin/sh",
            "-c",
            "echo kept > /data/f",
        ]);
        assert_eq!(code(&r), Some(0), "{who}: {}", r.stderr);
        let r = run(&[
            "--name",
            "reader",
            "-v",
            "data:/data:ro",
            img,
            "/bin/sh",
            "-c",
            "busybox cat /data/f; echo x > /data/g",
        ]);
        assert_eq!(r.stdout, "kept\n", "{who}: {}", r.stderr);
        assert!(
            r.stderr.contains("Read-only file system"),
            "{who}: {}",
            r.stderr
        );
        // A volume used by a container stays until the container goes.
        let r = rcfs(&["volume", "rm", "data"]);
        assert_ne!(code(&r), Some(0), "{who}");
        assert!(r.stderr.contains("reader"), "{who}: {}", r.stderr);
        assert_eq!(rcfs(&["volume", "ls", "-q"]).stdout, "data\n");
        rcfs(&["rm", "reader"]).expect_ok("rm reader");

        // --mount: a volume made on first use, a tmpfs with its size, a
        // host file read-only; --shm-size; --device.
        let host_file = f.dir.path().join(format!("note-{who}"));
        std::fs::write(&host_file, "from the host\n").unwrap();
        let bind = format!(
            "type=bind,source={},target=/note,readonly",
            host_file.display()
        );
        let r = run(&[
            "--rm",
            "--mount",
            "type=volume,source=data,target=/d",
            "--mount",
            "type=volume,source=fresh,target=/fresh",
            "--mount",
            "type=tmpfs,target=/scratch,tmpfs-size=1m",
            "--mount",
            &bind,
            "--shm-size",
            "2m",
            "--device",
            "/dev/zero:/dev/zero2",
            img,
            "/bin/sh",
            "-c",
            "busybox cat /d/f /note; busybox ls -A /fresh; \
             busybox df -k /scratch /dev/shm | busybox awk 'NR>1 {print $2}'; \
             busybox head -c 3 /dev/zero2 | busybox od -An -tx1; \
             echo y > /note",
        ]);
        assert_eq!(
            r.stdout, "kept\nfrom the host\n1024\n2048\n 00 00 00\n",
            "{who}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains("Read-only file system"),
            "{who}: {}",
            r.stderr
        );
        assert_eq!(rcfs(&["volume", "ls", "-q"]).stdout, "data\nfresh\n");
        rcfs(&["volume", "rm", "data", "fresh"]).expect_ok("volume rm");
        assert_eq!(rcfs(&["volume", "ls", "-q"]).stdout, "");

        // What rcfs does not do is an error that says so.
        for bad in [
            &["--mount", "type=volume,target=/anon"][..],
            &[
                "--mount",
                "type=bind,source=/tmp,target=/t,bind-propagation=rshared",
            ],
            &["--mount", "type=nfs,target=/x"],
            &["-v", ":/anon"],
            &["--device", "/dev/null:/dev/n:r"],
            &["--device", "/etc/hostname"],
            &["--device", "/dev/null:/etc/null"],
            &["--shm-size", "lots"],
        ] {
            let r = run(&[&["--rm"], bad, &[img, "true"]].concat());
            assert_eq!(code(&r), Some(125), "{who} {bad:?}: {}", r.stderr);
        }
    }
}
