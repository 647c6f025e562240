//! AEDAT 4.0 files (iniVation DV): the sans-I/O decoder, the encoder, and the DV packet layer
//! the network stream (`format::dv_network`) shares.
//!
//! Layout: the magic line `#!AER-DAT4.0\r\n`, an i32 little-endian length and the IOHeader
//! flatbuffer (compression, dataTablePosition, infoNode XML declaring the streams), then
//! packets `[i32 stream id][i32 size][compressed size-prefixed flatbuffer]` up to
//! dataTablePosition, where the FileDataTable (an index of the packets) fills the rest of the
//! file. Polarity events (`EVTS` streams) are decoded; frames, IMU samples and triggers are
//! verified, counted in `DecodeStats` and skipped.
//!
//! Every flatbuffer is verified before it is read, with bounds proportional to its size. The
//! schema types come from the `aedat` crate's generated code; its `Decoder` is not used,
//! because it reads headers unchecked, allocates whatever a file claims and takes truncation
//! for a clean end. The polarity is read as a raw byte (not as a `bool`, which would be
//! undefined behaviour for values other than 0 and 1) and must be 0 or 1.

mod compression;
mod data_table;
mod encoder;
pub(crate) mod io_header;
pub(crate) mod packets;
mod verify;

pub use compression::Compression;
pub use encoder::{
    Aedat4Encoder, Aedat4EncoderOptions, DEFAULT_EVENTS_PER_PACKET, HeaderPatch,
    MAX_EVENTS_PER_PACKET, WriteFileError, write_file,
};
pub(crate) use encoder::{PacketWriter, compressor};

use super::Sticky;
pub use packets::PacketStream;

/// Decoder for AEDAT 4.0 files.
pub type Aedat4Decoder = Sticky<PacketStream<true>>;

impl Aedat4Decoder {
    /// The packet compression the IOHeader declares, once it has been read.
    pub fn compression(&self) -> Option<Compression> {
        self.records().compression()
    }

    /// After a successful `finish`: how many packets the FileDataTable lists, having matched
    /// them against the packets read (offsets, stream ids, sizes, element counts). `None`
    /// when the file has no table.
    pub fn data_table_packets(&self) -> Option<u64> {
        self.records().table_packets()
    }
}
