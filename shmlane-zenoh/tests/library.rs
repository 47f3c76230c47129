//! The library builders embedded in one process with sessions the caller made, from an
//! MPMC ring (the binary tests drain SPSC rings). The only test in this binary: it sets
//! ZENOH_RUNTIME before zenoh starts, with no other test thread reading the environment.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use shmlane::spsc::Consumer;
use shmlane::{mpmc, Options};
use shmlane_zenoh::{config, Gap, In, Out};
use zenoh::Wait;

#[test]
fn out_and_in_builders_on_caller_sessions_carry_an_mpmc_ring() {
    const N: u64 = 5_000;
    std::env::set_var("ZENOH_RUNTIME", ZENOH_RUNTIME);
    let dir = TempDir::new("library");
    let ep = format!("unixsock-stream/{}", dir.0.join("z.sock").display());
    let sa = zenoh::open(config(std::slice::from_ref(&ep), &[]).unwrap())
        .wait()
        .unwrap();
    let sb = zenoh::open(config(&[], std::slice::from_ref(&ep)).unwrap())
        .wait()
        .unwrap();
    let (a, b, key) = (TestName::new("la"), TestName::new("lb"), key("library"));
    let tx =
        mpmc::Sender::create(&a, &Options::new().capacity(64 << 10).max_message(1024)).unwrap();
    let gaps = Arc::new(Mutex::new(Vec::new()));
    let g2 = Arc::clone(&gaps);
    let inb = In::new(&sb, &b, &key)
        .capacity(64 << 10)
        .on_gap(move |g: &Gap| g2.lock().unwrap().push(g.clone()));
    let in_thread = std::thread::spawn(move || inb.run());
    let out = Out::new(&sa, &a, &key).ring_timeout(Some(LIMIT));
    let out_thread = std::thread::spawn(move || out.run());
    let b2 = b.0.clone();
    let reader = std::thread::spawn(move || {
        let mut rx = Consumer::open_timeout(&b2, LIMIT).unwrap();
        let mut i = 0u64;
        loop {
            match rx.recv_timeout(LIMIT) {
                Ok(m) => {
                    assert_eq!(m.tag(), i as u32 ^ 0xa5a5, "tag of message {i}");
                    assert_eq!(&m[..], i.to_le_bytes().repeat((i % 100) as usize));
                    i += 1;
                }
                Err(shmlane::Error::Disconnected) => return i,
                Err(e) => panic!("after {i} messages: {e}"),
            }
        }
    });
    for i in 0..N {
        tx.send_tagged(
            i as u32 ^ 0xa5a5,
            &i.to_le_bytes().repeat((i % 100) as usize),
        )
        .unwrap();
    }
    drop(tx);
    let o = out_thread.join().unwrap().unwrap();
    let s = in_thread.join().unwrap().unwrap();
    assert_eq!(reader.join().unwrap(), N);
    assert_eq!((o.messages, s.messages), (N, N));
    assert!(o.end_acknowledged, "in acknowledges the end marker");
    assert!(!o.producer_died);
    assert_eq!((s.gaps, s.missing, s.stale, s.malformed), (0, 0, 0, 0));
    assert!(gaps.lock().unwrap().is_empty());

    // A sample from someone else on the key is reported, not delivered.
    let key2 = common::key("library-foreign");
    let b3 = TestName::new("lc");
    let gaps3 = Arc::new(Mutex::new(Vec::new()));
    let g3 = Arc::clone(&gaps3);
    let inb = In::new(&sb, &b3, &key2).on_gap(move |g: &Gap| g3.lock().unwrap().push(g.clone()));
    let in_thread = std::thread::spawn(move || inb.run());
    let publisher = sa.declare_publisher(key2.clone()).wait().unwrap();
    while !publisher.matching_status().wait().unwrap().matching() {
        std::thread::sleep(Duration::from_millis(5));
    }
    publisher.put("not a bridge sample").wait().unwrap();
    // A forged data sample numbered u64::MAX (no next number): dropped as malformed, not a
    // panic in the callback (a debug build overflowed there) nor a wrapped count.
    let forged = shmlane_zenoh::wire::Header {
        kind: shmlane_zenoh::wire::Kind::Data { tag: 0 },
        epoch: 1,
        seq: u64::MAX,
    };
    publisher
        .put("forged")
        .attachment(&forged.encode()[..])
        .wait()
        .unwrap();
    // Then a real end marker (epoch 1, 0 messages) ends it.
    let end = shmlane_zenoh::wire::Header {
        kind: shmlane_zenoh::wire::Kind::End { died: true },
        epoch: 1,
        seq: 0,
    };
    publisher
        .put(Vec::<u8>::new())
        .attachment(&end.encode()[..])
        .wait()
        .unwrap();
    let r = in_thread.join().unwrap();
    assert!(
        matches!(r, Err(shmlane_zenoh::Error::FarProducerDied)),
        "{r:?}"
    );
    let g = gaps3.lock().unwrap();
    assert!(
        matches!(&g[..], [Gap::Malformed(a), Gap::Malformed(b)]
            if a.contains("without an attachment") && b.contains("past any real stream")),
        "{g:?}"
    );
    sa.close().wait().unwrap();
    sb.close().wait().unwrap();
}
