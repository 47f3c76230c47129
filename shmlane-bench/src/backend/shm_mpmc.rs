//! `shm-mpmc`: the shared-memory MPMC ring, used here with one sender and one receiver.

use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::mpmc::{Receiver, Sender};
use shmlane::Options;
use shmlane::Result;

/// The lock-free MPMC slot ring in shared memory (one sender, one receiver here).
#[derive(Debug)]
pub struct ShmMpmc;

/// Slots of `max_message` bytes (plus their header), as many as fit in the capacity.
fn options(cfg: &Config) -> Options {
    let slot = (cfg.max_message + shmlane::format::SLOT_HEADER).next_power_of_two();
    let slots = (cfg.capacity / slot).max(2);
    Options::new()
        .slots(slots)
        .max_message(cfg.max_message)
        .wait(cfg.wait)
}

impl TxEnd for Sender {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Sender::send(self, msg)
    }
}

impl RxEnd for Receiver {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        let m = self.recv()?;
        Ok(f(&m))
    }
}

impl Transport for ShmMpmc {
    type Tx = Sender;
    type Rx = Receiver;
    const NAME: &'static str = "shm-mpmc";

    fn create_tx(name: &str, cfg: &Config) -> Result<Sender> {
        Sender::create(name, &options(cfg))
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<Receiver> {
        Receiver::create(name, &options(cfg))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<Sender> {
        let s = Sender::open(name)?;
        s.set_wait(cfg.wait);
        Ok(s)
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<Receiver> {
        let r = Receiver::open(name)?;
        r.set_wait(cfg.wait);
        Ok(r)
    }
}
