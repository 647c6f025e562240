//! inflor: an event-driven streaming inference runtime for DVS (event) cameras, running spiking
//! neural networks built from the InfLoR method (SRIF neurons plus the Membrane Potential
//! Rectifier).
//!
//! Data flows one way: a source feeds bytes to a sans-I/O decoder ([`format`]), which yields
//! [`event::Event`]s; the [`binner`] turns them into sparse frames; an executor ([`exec`]) runs
//! the network ([`snn`]) on those frames. [`dataset`] reads labelled recordings and emulates a
//! DVS from images. See `ARCHITECTURE.md` for the whole map.

pub mod binner;
pub mod calibrate;
pub mod config;
pub mod dataset;
pub mod event;
pub mod exec;
pub mod format;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod session;
pub mod sink;
pub mod snn;
pub mod source;
pub mod telemetry;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod train;
