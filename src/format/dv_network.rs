//! the DV network stream: decoder (placeholder until its owner lands it).

use super::{DecodeError, DecodeErrorKind, DecodeOptions, DecodeStats, Decoder, Format};
use crate::event::{Event, StreamInfo};

/// Decoder for the DV network stream.
pub struct DvNetworkDecoder {
    stats: DecodeStats,
}

impl DvNetworkDecoder {
    /// A fresh decoder.
    pub fn new(_options: &DecodeOptions) -> Self {
        Self {
            stats: DecodeStats::default(),
        }
    }
}

impl Decoder for DvNetworkDecoder {
    fn feed(&mut self, _input: &[u8], _out: &mut Vec<Event>) -> Result<(), DecodeError> {
        Err(DecodeError::new(
            Format::DvNetwork,
            0,
            DecodeErrorKind::Unexpected {
                expected: "a built decoder".into(),
                found: "placeholder".into(),
            },
        ))
    }
    fn finish(&mut self, _out: &mut Vec<Event>) -> Result<(), DecodeError> {
        Ok(())
    }
    fn info(&self) -> Option<&StreamInfo> {
        None
    }
    fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}

/// Whether `prefix` starts like a DV network stream (placeholder until its owner lands it).
pub fn looks_like_dv_network(_prefix: &[u8]) -> bool {
    false
}
