//! A full /dev/shm: create reserves the pages, so a segment that does not fit is
//! `Error::NoSpace` at create, with the sizes in the message — tested on a 1 MiB tmpfs
//! mounted over /dev/shm in a private mount namespace of a child process.

mod common;

use std::time::Duration;

use common::{finish_child, is_child, skip, spawn_child};
use shmlane::spsc::Producer;
use shmlane::{Error, Options};

const CHILD: &str = "child_on_a_small_dev_shm";

#[test]
fn child_on_a_small_dev_shm() {
    if !is_child(CHILD) {
        return;
    }
    // A mount namespace of our own, so the small tmpfs is seen by this process only.
    let ok = common::mount_privately(c"tmpfs", c"/dev/shm", c"size=1m");
    if !ok {
        skip(&format!(
            "cannot mount a small tmpfs here ({}); NoSpace is still tested by asking for more than /dev/shm has",
            std::io::Error::last_os_error()
        ));
        return;
    }
    // 4 MiB do not fit in 1 MiB: NoSpace at create, naming the sizes, and nothing left.
    let r = Producer::create("/nospace", &Options::new().capacity(4 << 20));
    match r {
        Err(e @ Error::NoSpace { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&(4096 + (4 << 20)).to_string()), "{msg}");
            assert!(msg.contains("/dev/shm has"), "{msg}");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    assert!(
        std::fs::read_dir("/dev/shm").unwrap().next().is_none(),
        "a file was left"
    );
    // What fits still works.
    let mut tx = Producer::create("/fits", &Options::new().capacity(256 << 10)).unwrap();
    tx.try_send(b"ok").unwrap();
}

#[test]
fn full_dev_shm_is_no_space_at_create() {
    let child = spawn_child(CHILD, &[]);
    // Panics if the child failed, skipped under CI, or never ran the test.
    finish_child(child, Duration::from_secs(30));
}
