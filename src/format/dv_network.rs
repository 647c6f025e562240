//! The DV network stream (what dv-processing's `NetworkWriter` sends over TCP): decoder,
//! encoder and a detection probe. The packet layer is AEDAT 4.0's (`format::aedat4`).
//!
//! Layout: a u32 little-endian length and the IOHeader flatbuffer (no magic line,
//! dataTablePosition -1), then `[i32 stream id][i32 size][compressed size-prefixed
//! EventPacket]` repeated for as long as the connection lasts. There is no data table.

use super::aedat4::io_header;
use super::aedat4::{Aedat4EncoderOptions, Compression, PacketStream, PacketWriter, compressor};
use super::{EncodeError, Encoder, Sticky};
use crate::event::{Event, StreamInfo};

/// Decoder for the DV network stream.
pub type DvNetworkDecoder = Sticky<PacketStream<false>>;

impl DvNetworkDecoder {
    /// The packet compression the IOHeader declares, once it has been read.
    pub fn compression(&self) -> Option<Compression> {
        self.records().compression()
    }
}

/// The largest IOHeader the probe accepts: real ones are under a few KiB.
const MAX_PROBED_HEADER: u32 = 1 << 20;

/// Whether `prefix` starts like a DV network stream: a plausible u32 length followed by that
/// many bytes that verify as an IOHeader (identifier `IOHE`, known compression,
/// dataTablePosition -1, an infoNode declaring at least one stream).
pub fn looks_like_dv_network(prefix: &[u8]) -> bool {
    let Some(&[a, b, c, d]) = prefix.get(..4) else {
        return false;
    };
    let length = u32::from_le_bytes([a, b, c, d]);
    if !(8..=MAX_PROBED_HEADER).contains(&length) {
        return false;
    }
    let Some(buffer) = prefix.get(..4 + length as usize) else {
        return false;
    };
    io_header::parse(buffer).is_ok_and(|header| header.data_table_position == -1)
}

/// Encoder for the DV network stream, byte for byte the layout dv-processing's
/// `NetworkWriter` sends: u32 length + IOHeader (dataTablePosition -1), then event packets
/// of stream 0. [`Aedat4EncoderOptions::data_table`] does not apply and is ignored.
#[derive(Debug)]
pub struct DvNetworkEncoder {
    options: Aedat4EncoderOptions,
    writer: Option<Box<PacketWriter>>,
}

impl DvNetworkEncoder {
    /// An encoder with `options`.
    pub fn new(options: Aedat4EncoderOptions) -> Self {
        Self {
            options,
            writer: None,
        }
    }

    /// Sends the buffered events now as a short packet (a live sender calls this per batch so
    /// that events are not held back until a packet fills).
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.writer()?.flush(out)
    }

    fn writer(&mut self) -> Result<&mut PacketWriter, EncodeError> {
        self.writer
            .as_deref_mut()
            .ok_or_else(|| EncodeError::Compress("encode called outside begin..end".to_string()))
    }
}

impl Encoder for DvNetworkEncoder {
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let compressor = compressor(&self.options)?;
        let info_node = io_header::event_stream_info_node(info, self.options.compression, None);
        // The size-prefixed IOHeader is exactly the u32 length followed by the header.
        let header = io_header::build(self.options.compression, -1, &info_node);
        out.extend_from_slice(&header);
        let mut writer = PacketWriter::new(compressor, &self.options, info);
        writer.written = header.len() as u64;
        self.writer = Some(Box::new(writer));
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.writer()?.encode(events, out)
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.writer()?.flush(out)?;
        self.writer = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{DecodeOptions, Decoder};

    fn info() -> StreamInfo {
        StreamInfo {
            source: Some("unit".to_string()),
            ..StreamInfo::new(128, 128, "")
        }
    }

    #[test]
    fn flush_sends_a_short_packet_that_decodes_at_once() {
        let mut encoder = DvNetworkEncoder::new(Aedat4EncoderOptions {
            events_per_packet: 100,
            ..Aedat4EncoderOptions::default()
        });
        let mut stream = Vec::new();
        assert_eq!(encoder.begin(&info(), &mut stream), Ok(()));
        assert!(looks_like_dv_network(&stream));
        let header_len = stream.len();
        let events = [Event::new(1, 2, 3, true), Event::new(4, 5, 6, false)];
        assert_eq!(encoder.encode(&events, &mut stream), Ok(()));
        assert_eq!(stream.len(), header_len, "held until the packet fills");
        assert_eq!(encoder.flush(&mut stream), Ok(()));
        assert!(stream.len() > header_len);

        // A live reader decodes the flushed packet without waiting for more.
        let mut decoder = DvNetworkDecoder::new(&DecodeOptions::default());
        let mut decoded = Vec::new();
        let fed = decoder.feed(&stream, &mut decoded);
        assert_eq!(
            fed,
            Ok(crate::format::Fed {
                consumed: stream.len(),
                more: false
            })
        );
        assert_eq!(decoded, events);
        assert_eq!(decoder.info().map(|i| i.width), Some(128));
    }

    #[test]
    fn probe_rejects_implausible_lengths() {
        assert!(!looks_like_dv_network(&[7, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]));
        assert!(!looks_like_dv_network(
            &(MAX_PROBED_HEADER + 1).to_le_bytes()
        ));
    }
}
