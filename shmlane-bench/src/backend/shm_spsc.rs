//! `shm-spsc`: the shared-memory SPSC ring.

use super::{Config, RxEnd, Transport, TxEnd};
use shmlane::spsc::{Consumer, Producer};
use shmlane::Options;
use shmlane::Result;

/// The lock-free SPSC ring in shared memory (this crate's reason to exist).
#[derive(Debug)]
pub struct ShmSpsc;

/// At least the configured capacity, and room for two records of `max_message` bytes:
/// less would make `Options` double the ring anyway (padding plus a record must fit in an
/// empty ring). With the benchmarks' 4 MiB (`bench::BENCH_CAPACITY`) and 64 KiB messages
/// it stays 4 MiB.
pub(super) fn options(cfg: &Config) -> Options {
    Options::new()
        .capacity(
            cfg.capacity
                .max(2 * shmlane::format::record_size(cfg.max_message)),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(capacity: usize, max_message: usize) -> (usize, usize) {
        let cfg = Config {
            max_message,
            capacity,
            wait: shmlane::Wait::Block,
        };
        options(&cfg).spsc_geometry().expect("geometry")
    }

    #[test]
    fn benchmark_rings_keep_their_capacity() {
        let bench = crate::runner::BENCH_CAPACITY;
        assert_eq!(geometry(bench, 64 << 10), (4 << 20, 64 << 10));
        assert_eq!(geometry(bench, 4096), (4 << 20, 4096));
        assert_eq!(geometry(1 << 20, 64 << 10), (1 << 20, 64 << 10));
        // Too small for two records: room for two, as Options would make it anyway.
        assert_eq!(geometry(64 << 10, 64 << 10), (256 << 10, 64 << 10));
        assert_eq!(geometry(4096, 2040), (4096, 2040));
        assert_eq!(geometry(4096, 2048), (8192, 2048));
    }
}
