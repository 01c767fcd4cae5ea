//! pg-switch against real clusters: a primary and its streaming standby on loopback, the
//! switch, its re-runs after every kind of interruption, each proof made to fail, and a
//! target whose network goes away during the promotion.

mod common;
mod interrupt;
mod proofs;
mod switch;
mod unreachable;
