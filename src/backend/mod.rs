//! Transports (filled in below).
