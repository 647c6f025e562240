//! Prophesee EVT 3.0: decoder (placeholder until its owner lands it).

use super::{DecodeError, DecodeErrorKind, DecodeOptions, DecodeStats, Decoder, Format};
use crate::event::{Event, StreamInfo};

/// Decoder for Prophesee EVT 3.0.
pub struct Evt3Decoder {
    stats: DecodeStats,
}

impl Evt3Decoder {
    /// A fresh decoder.
    pub fn new(_options: &DecodeOptions) -> Self {
        Self {
            stats: DecodeStats::default(),
        }
    }
}

impl Decoder for Evt3Decoder {
    fn feed(&mut self, _input: &[u8], _out: &mut Vec<Event>) -> Result<(), DecodeError> {
        Err(DecodeError::new(
            Format::Evt3,
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
