//! The one integration-test binary. Each module states what it covers.

mod binner;
mod cli;
mod daemon;
mod dataset;
mod exec;
mod formats_aedat4;
mod formats_jaer;
mod formats_prophesee;
mod grpc;
mod int8;
mod malformed;
mod model;
mod nats;
mod plot;
mod python;
mod qat;
mod replay;
mod session;
mod snn;
mod support;
mod train;
mod web;
