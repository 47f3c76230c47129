//! `shm-spsc`: the shared-memory SPSC ring.

use super::{Config, RxEnd, Transport, TxEnd};
use crate::error::Result;
use crate::spsc::{Consumer, Producer};
use crate::Options;

/// The lock-free SPSC ring in shared memory (this crate's reason to exist).
#[derive(Debug)]
pub struct ShmSpsc;

fn options(cfg: &Config) -> Options {
    Options::new()
        .capacity(cfg.capacity.max(cfg.max_message * 2))
        .max_message(cfg.max_message)
        .wait(cfg.wait)
}

impl TxEnd for Producer {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Producer::send(self, msg)
    }
}

impl RxEnd for Consumer {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        let m = self.recv()?;
        Ok(f(&m))
    }
}

impl Transport for ShmSpsc {
    type Tx = Producer;
    type Rx = Consumer;
    const NAME: &'static str = "shm-spsc";

    fn create_tx(name: &str, cfg: &Config) -> Result<Producer> {
        Producer::create(name, &options(cfg))
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<Consumer> {
        Consumer::create(name, &options(cfg))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<Producer> {
        let mut p = Producer::open(name)?;
        p.set_wait(cfg.wait);
        Ok(p)
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<Consumer> {
        let mut c = Consumer::open(name)?;
        c.set_wait(cfg.wait);
        Ok(c)
    }
}
