//! `shm-spsc-typed`: the SPSC ring through the typed API ([`shmlane::typed`]), carrying each
//! message as a slice of `u64` (`send_slice` / `recv_slice`, read in place), to show what
//! the typed layer costs beside `shm-spsc`. Sizes must be multiples of 8.

use zerocopy::{FromBytes, IntoBytes};

use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::typed::{Consumer, Producer};
use shmlane::Result;

/// The SPSC ring carrying `[u64]` messages through [`shmlane::typed`].
#[derive(Debug)]
pub struct ShmSpscTyped;

/// The sending end: a typed producer of `u64` slices.
#[derive(Debug)]
pub struct ShmSpscTypedTx {
    tx: Producer<u64>,
    /// For a message buffer that is not 8-aligned (the benchmark's are, from the
    /// allocator): copied here first.
    scratch: Vec<u64>,
}

/// The receiving end: a typed consumer of `u64` slices.
#[derive(Debug)]
pub struct ShmSpscTypedRx(Consumer<u64>);

impl TxEnd for ShmSpscTypedTx {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if msg.len() % 8 != 0 {
            return Err(shmlane::Error::InvalidOptions {
                reason: format!(
                    "shm-spsc-typed carries u64 slices: {} bytes is not a multiple of 8",
                    msg.len()
                ),
            });
        }
        match <[u64]>::ref_from_bytes(msg) {
            Ok(words) => self.tx.send_slice(words),
            Err(_) => {
                self.scratch.clear();
                self.scratch.resize(msg.len() / 8, 0);
                self.scratch.as_mut_bytes().copy_from_slice(msg);
                self.tx.send_slice(&self.scratch)
            }
        }
    }
}

impl RxEnd for ShmSpscTypedRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, f: F) -> Result<R> {
        let m = self.0.recv_slice()?;
        Ok(f(m.as_bytes()))
    }
}

impl Transport for ShmSpscTyped {
    type Tx = ShmSpscTypedTx;
    type Rx = ShmSpscTypedRx;
    const NAME: &'static str = "shm-spsc-typed";

    fn create_tx(name: &str, cfg: &Config) -> Result<ShmSpscTypedTx> {
        Ok(ShmSpscTypedTx {
            tx: Producer::create(name, &super::shm_spsc::options(cfg))?,
            scratch: Vec::new(),
        })
    }

    fn create_rx(name: &str, cfg: &Config) -> Result<ShmSpscTypedRx> {
        Ok(ShmSpscTypedRx(Consumer::create(
            name,
            &super::shm_spsc::options(cfg),
        )?))
    }

    fn open_tx(name: &str, cfg: &Config) -> Result<ShmSpscTypedTx> {
        let mut tx = Producer::open(name)?;
        tx.set_wait(cfg.wait);
        Ok(ShmSpscTypedTx {
            tx,
            scratch: Vec::new(),
        })
    }

    fn open_rx(name: &str, cfg: &Config) -> Result<ShmSpscTypedRx> {
        let mut rx = Consumer::open(name)?;
        rx.set_wait(cfg.wait);
        Ok(ShmSpscTypedRx(rx))
    }

    fn supports(size: usize) -> std::result::Result<(), String> {
        if size % 8 != 0 {
            return Err("typed u64 slices: sizes that are multiples of 8 only".into());
        }
        Ok(())
    }
}
