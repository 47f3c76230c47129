mod common;
use shmlane::spsc::{Consumer, Producer};
use shmlane::Options;
#[test]
fn smoke() {
    let name = common::TestName::new("smoke");
    let mut tx = Producer::create(&name, &Options::new().capacity(4096)).unwrap();
    let mut rx = Consumer::open(&name).unwrap();
    for i in 0..10000u32 {
        let msg = vec![i as u8; (i % 300) as usize];
        tx.send_tagged(i, &msg).unwrap();
        let m = rx.recv().unwrap();
        assert_eq!(m.tag(), i);
        assert_eq!(&m[..], &msg[..]);
    }
    drop(tx);
    assert!(matches!(rx.recv(), Err(shmlane::Error::Disconnected)));
}
