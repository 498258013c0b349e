//! default_permissions: with allow_other, the kernel checks other users'
//! access against mode bits and owners exactly as on kernel overlayfs.
//! The same shell commands run as uid 65534 on both mounts; their exit
//! codes and messages must match.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{standard, Fixture};
use crate::mounts::{run, Impl, Mount, COMMAND_TIMEOUT};

/// Runs each command as uid/gid 65534 in `root`; one output line each.
fn as_nobody(root: &std::path::Path, commands: &[&str]) -> String {
    let mut script = String::from("cd \"$1\" || exit 99\n");
    for c in commands {
        script.push_str(&format!(
            "( {c} ) >/dev/null 2>&1; echo \"{} => $?\"\n",
            c.replace('"', "'")
        ));
    }
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "sh",
        "-c",
        &script,
        "sh",
    ])
    .arg(root);
    let r = run(&mut cmd, COMMAND_TIMEOUT);
    assert!(r.success(), "script as nobody failed: {r:?}");
    r.stdout
}

#[test]
fn kernel_checks_permissions_for_other_users() {
    let (mut lowers, upper) = standard();
    lowers[1] = lowers[1]
        .clone()
        .file_mode("private", "root only\n", 0o600)
        .dir_mode("open-dir", 0o777)
        .file("open-dir/roots", "root's file in a 0777 dir\n")
        .dir_mode("sticky", 0o1777)
        .file("sticky/roots", "root's file in a sticky dir\n")
        .file_mode("nobodys", "nobody's\n", 0o644)
        .owner("nobodys", 65534, 65534)
        .file_mode("exec-only", "#!/bin/sh\necho hi\n", 0o711)
        .dir_mode("no-search", 0o744)
        .file("no-search/f", "f");
    let upper = upper.dir_mode("upper-open", 0o777);
    let imp = Impl::from_env();
    let fix = Fixture::with_subject(&lowers, Some(&upper), |l, uw, m| {
        Mount::subject_with(imp, l, uw, m, true)
    });
    std::fs::set_permissions(fix.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let commands = [
        "cat lf",
        "cat private",
        "echo x >> lf",
        "echo x > new-in-root",
        "echo x > ld/new",
        "echo x > open-dir/new",
        "echo x > upper-open/new",
        "rm open-dir/roots",
        "rm sticky/roots",
        "echo x >> nobodys",
        "chmod 600 nobodys",
        "chmod 600 lf",
        "chown 65534 nobodys",
        "touch -d @0 nobodys",
        "touch -d @0 lf",
        "touch lf",
        "cat exec-only",
        "ls no-search",
        "cat no-search/f",
        "mkdir open-dir/d",
        "mv open-dir/d open-dir/e",
        "ln -s x open-dir/link",
        "ln nobodys open-dir/hard",
        "setfattr -n user.x -v y nobodys",
        "setfattr -n user.x -v y lf",
        "rm lf",
        "rmdir ledir",
    ];
    let k = as_nobody(&fix.kernel.root, &commands);
    let s = as_nobody(&fix.subject.root, &commands);
    let report = crate::harness::log_diff(
        "kernel",
        &k.lines().map(String::from).collect::<Vec<_>>(),
        &fix.name(),
        &s.lines().map(String::from).collect::<Vec<_>>(),
    );
    assert!(
        report.is_empty(),
        "{} permission checks differ from kernel overlayfs:\n{report}",
        fix.name()
    );
    fix.check_trees();
}

/// POSIX ACLs are enforced by the kernel on rcfs as on kernel overlayfs: a
/// user named in a file's ACL may read it though its mode says no, in a
/// lower file and after the ACL is changed through the mount (a copy-up),
/// also after a remount.
#[test]
fn posix_acls_are_enforced() {
    let (mut lowers, upper) = standard();
    lowers[1] = lowers[1]
        .clone()
        .file_mode("acl-lower", "acl\n", 0o600)
        .file_mode("acl-set", "set through the mount\n", 0o600);
    let imp = Impl::from_env();
    let mut fix = Fixture::with_subject(&lowers, Some(&upper), |l, uw, m| {
        Mount::subject_with(imp, l, uw, m, true)
    });
    std::fs::set_permissions(fix.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // An ACL in the lower layer, set on both copies of it before use.
    for l in [fix.kernel_lower(1), fix.subject_lower(1)] {
        setfacl(&l.join("acl-lower"), "u:65534:r");
    }
    for root in [fix.kernel.root.clone(), fix.subject.root.clone()] {
        setfacl(&root.join("acl-set"), "u:65534:r");
    }
    let commands = ["cat acl-lower", "cat acl-set", "cat lf"];
    let k = as_nobody(&fix.kernel.root, &commands);
    let s = as_nobody(&fix.subject.root, &commands);
    assert_eq!(
        s,
        k,
        "{} ACL results differ from kernel overlayfs",
        fix.name()
    );
    assert!(
        k.contains("cat acl-lower => 0") && k.contains("cat acl-set => 0"),
        "{k}"
    );
    // Taking the grant away through the mount denies it.
    for root in [fix.kernel.root.clone(), fix.subject.root.clone()] {
        setfacl(&root.join("acl-lower"), "u:65534:-");
    }
    let k = as_nobody(&fix.kernel.root, &commands);
    let s = as_nobody(&fix.subject.root, &commands);
    assert_eq!(s, k, "{} after setfacl", fix.name());
    assert!(k.contains("cat acl-lower => 1"), "{k}");
    fix.remount_with(true);
    let k = as_nobody(&fix.kernel.root, &commands);
    let s = as_nobody(&fix.subject.root, &commands);
    assert_eq!(s, k, "{} after a remount", fix.name());
}

fn setfacl(p: &std::path::Path, spec: &str) {
    let r = run(
        std::process::Command::new("setfacl")
            .args(["-m", spec])
            .arg(p),
        COMMAND_TIMEOUT,
    );
    assert!(r.success(), "setfacl -m {spec} {}: {r:?}", p.display());
}
