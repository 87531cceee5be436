//! Files and directories logbus creates are owner-only whatever the umask:
//! a bus under umask 000 must not leave world-writable directories (anyone
//! could then drop segments or state files into them). Its own test binary,
//! because the umask is per process and other tests create files meanwhile.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use logbus::{Bus, BusOptions, GroupOptions, Record, StartAt};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn walk(dir: &Path, seen: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        seen.push(path.clone());
        if path.is_dir() {
            walk(&path, seen);
        }
    }
}

#[test]
fn under_umask_000_every_directory_is_0700_every_file_0600_and_the_callers_directory_keeps_its_mode() {
    let parent = tempfile::tempdir().expect("tempdir");
    let top = parent.path().join("bus");
    std::fs::create_dir(&top).expect("mkdir");
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0) };
    let bus = Bus::open(&top, BusOptions::default()).expect("open");
    let topic = bus.topic("orders").expect("topic");
    topic.publish(&Record::new(b"x")).expect("publish");
    topic
        .subscribe("audit", StartAt::Earliest)
        .expect("subscribe")
        .commit()
        .expect("commit");
    topic
        .group("billing", GroupOptions::default())
        .expect("group")
        .try_recv()
        .expect("recv");
    let requester = bus.requester("client").expect("requester");
    drop(requester);
    bus.close().expect("close");
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(old) };

    assert_eq!(mode(&top), 0o755, "the caller's directory keeps its mode");
    let mut entries = Vec::new();
    walk(&top, &mut entries);
    assert!(entries.len() > 10, "{entries:?}");
    for path in entries {
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
}
