//! Writing DV event packets: the AEDAT 4.0 file encoder and the packet writer it shares with
//! the DV network stream encoder.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use aedat::events_generated::{Event as FbEvent, EventPacket, EventPacketArgs};
use flatbuffers::{FlatBufferBuilder, Push, Vector, WIPOffset};

use super::compression::{Compression, Compressor};
use super::data_table::{self, TableEntry};
use super::io_header;
use super::packets::MAGIC;
use crate::event::{Event, StreamInfo};
use crate::format::{EncodeError, Encoder};

/// Events per packet by default: dv-processing's `MonoCameraWriter` writes an event store
/// in packets of its 10,000-event shards.
pub const DEFAULT_EVENTS_PER_PACKET: usize = 10_000;
/// The most events one packet may hold (16 MiB of flatbuffer), so readers with the default
/// record limit accept every packet written.
pub const MAX_EVENTS_PER_PACKET: usize = 1 << 20;
/// The stream id the encoders give the event stream.
const EVENT_STREAM_ID: i32 = 0;

/// Settings for [`Aedat4Encoder`] and the DV network stream encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aedat4EncoderOptions {
    /// Packet compression. [`Compression::Lz4High`] cannot be written (no LZ4 HC compressor).
    pub compression: Compression,
    /// Events per packet, clamped to 1 ..= [`MAX_EVENTS_PER_PACKET`].
    pub events_per_packet: usize,
    /// Files only: append a FileDataTable in [`Encoder::end`]. The header written by
    /// [`Encoder::begin`] still says "no table" (-1); the caller must then overwrite it with
    /// [`Aedat4Encoder::header_patch`], which needs a seekable output. [`write_file`] does
    /// both. Leave it `false` when streaming to an output that cannot seek.
    pub data_table: bool,
}

impl Default for Aedat4EncoderOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Lz4,
            events_per_packet: DEFAULT_EVENTS_PER_PACKET,
            data_table: false,
        }
    }
}

/// An event in the flatbuffer layout. The builder aligns values to their `Output` type, and
/// the generated `Event` has alignment 1, which would leave timestamps misaligned for C++
/// readers; this 8-aligned twin gives the `int64` its natural alignment.
#[derive(Clone, Copy)]
struct AlignedEvent(FbEvent);

#[repr(C, align(8))]
struct EventLayout([u8; 16]);

impl Push for AlignedEvent {
    type Output = EventLayout;
    #[inline]
    fn push(&self, dst: &mut [u8], _rest: &[u8]) {
        dst.copy_from_slice(&self.0.0);
    }
}

/// The packet compressor for `options`, shared by both encoders.
pub(crate) fn compressor(options: &Aedat4EncoderOptions) -> Result<Compressor, EncodeError> {
    Compressor::new(options.compression)
}

/// Buffers events into packets and writes `[i32 stream id][i32 size][compressed body]`.
pub(crate) struct PacketWriter {
    compressor: Compressor,
    builder: FlatBufferBuilder<'static>,
    body: Vec<u8>,
    pending: Vec<Event>,
    events_per_packet: usize,
    width: u16,
    height: u16,
    /// Bytes written so far by the owning encoder, header included: the next packet's offset.
    pub(crate) written: u64,
    /// Events accepted so far, for error messages.
    events: u64,
    /// Packets written, for the FileDataTable.
    pub(crate) entries: Vec<TableEntry>,
}

impl PacketWriter {
    pub(crate) fn new(
        compressor: Compressor,
        options: &Aedat4EncoderOptions,
        info: &StreamInfo,
    ) -> Self {
        Self {
            compressor,
            builder: FlatBufferBuilder::new(),
            body: Vec::new(),
            pending: Vec::new(),
            events_per_packet: options.events_per_packet.clamp(1, MAX_EVENTS_PER_PACKET),
            width: info.width,
            height: info.height,
            written: 0,
            events: 0,
            entries: Vec::new(),
        }
    }

    /// Accepts events, writing every packet that fills up.
    pub(crate) fn encode(
        &mut self,
        events: &[Event],
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        // The file stores i16 coordinates; a sensor wider than 32768 cannot use its far side.
        let width = self.width.min(0x8000);
        let height = self.height.min(0x8000);
        for (i, event) in events.iter().enumerate() {
            if event.x >= width || event.y >= height {
                return Err(EncodeError::Unrepresentable {
                    index: self.events + i as u64,
                    event: *event,
                    reason: format!(
                        "outside the {}x{} sensor or beyond the format's i16 coordinates",
                        self.width, self.height
                    ),
                });
            }
        }
        self.events += events.len() as u64;
        let mut rest = events;
        while !rest.is_empty() {
            if self.pending.is_empty() && rest.len() >= self.events_per_packet {
                // Whole packets straight from the caller's slice.
                let (packet, tail) = rest.split_at(self.events_per_packet);
                self.write_packet(packet, out)?;
                rest = tail;
                continue;
            }
            let take = (self.events_per_packet - self.pending.len()).min(rest.len());
            let (head, tail) = rest.split_at(take);
            self.pending.extend_from_slice(head);
            rest = tail;
            if self.pending.len() == self.events_per_packet {
                self.flush(out)?;
            }
        }
        Ok(())
    }

    /// Writes the buffered events as a (possibly short) packet.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let result = self.write_packet(&pending, out);
        self.pending = pending;
        self.pending.clear();
        result
    }

    fn write_packet(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.builder.reset();
        // Coordinates were checked to be below 0x8000, so they fit i16.
        let aligned = self.builder.create_vector_from_iter(
            events
                .iter()
                .map(|e| AlignedEvent(FbEvent::new(e.t, e.x as i16, e.y as i16, e.polarity))),
        );
        // Same bytes, viewed as the schema's vector type.
        let elements: WIPOffset<Vector<FbEvent>> = WIPOffset::new(aligned.value());
        let root = EventPacket::create(
            &mut self.builder,
            &EventPacketArgs {
                elements: Some(elements),
            },
        );
        self.builder.finish_size_prefixed(root, Some("EVTS"));
        self.compressor
            .compress(self.builder.finished_data(), &mut self.body)?;
        let size = i32::try_from(self.body.len()).map_err(|_| {
            EncodeError::Compress(format!("packet of {} bytes exceeds i32", self.body.len()))
        })?;
        // DV's table locates a packet by its body, after `[stream id][size]`.
        let byte_offset = i64::try_from(self.written + 8)
            .map_err(|_| EncodeError::Compress("output exceeds i64 bytes".to_string()))?;
        out.extend_from_slice(&EVENT_STREAM_ID.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&self.body);
        self.written += 8 + self.body.len() as u64;
        self.entries.push(TableEntry {
            byte_offset,
            stream_id: EVENT_STREAM_ID,
            size,
            num_elements: events.len() as i64,
            timestamp_start: events.first().map_or(0, |e| e.t),
            timestamp_end: events.last().map_or(0, |e| e.t),
        });
        Ok(())
    }
}

/// Where to overwrite a file's IOHeader once its FileDataTable is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPatch {
    /// Absolute file offset of the IOHeader length field.
    pub offset: u64,
    /// The replacement bytes (same length as those written by `begin`).
    pub bytes: Vec<u8>,
}

impl HeaderPatch {
    /// Writes the patch into a seekable output and seeks back to its end.
    pub fn apply<W: Write + Seek>(&self, writer: &mut W) -> io::Result<()> {
        let end = writer.stream_position()?;
        writer.seek(SeekFrom::Start(self.offset))?;
        writer.write_all(&self.bytes)?;
        writer.seek(SeekFrom::Start(end))?;
        Ok(())
    }
}

#[derive(Debug)]
enum State {
    Idle,
    Writing {
        writer: Box<PacketWriter>,
        info_node: String,
    },
    Done,
}

/// AEDAT 4.0 file encoder: magic line, IOHeader (infoNode naming one `EVTS` stream 0 with
/// the sensor size and source), then event packets, and optionally a FileDataTable.
///
/// The output of `begin`/`encode`/`end` is a valid file on its own, with
/// dataTablePosition -1 (DV readers then scan the packets). With
/// [`Aedat4EncoderOptions::data_table`] set, `end` also appends the table, and
/// [`Aedat4Encoder::header_patch`] gives the header that points at it, to write over the
/// first one; [`write_file`] does that for a file on disk.
#[derive(Debug)]
pub struct Aedat4Encoder {
    options: Aedat4EncoderOptions,
    state: State,
    patch: Option<HeaderPatch>,
}

impl Aedat4Encoder {
    /// An encoder with `options`.
    pub fn new(options: Aedat4EncoderOptions) -> Self {
        Self {
            options,
            state: State::Idle,
            patch: None,
        }
    }

    /// After `end` with [`Aedat4EncoderOptions::data_table`]: the IOHeader that points at the
    /// table, to write at the returned offset.
    pub fn header_patch(&self) -> Option<&HeaderPatch> {
        self.patch.as_ref()
    }

    fn writer(&mut self) -> Result<&mut PacketWriter, EncodeError> {
        match &mut self.state {
            State::Writing { writer, .. } => Ok(writer),
            State::Idle | State::Done => Err(EncodeError::Compress(
                "encode called outside begin..end".to_string(),
            )),
        }
    }
}

impl std::fmt::Debug for PacketWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketWriter")
            .field("written", &self.written)
            .field("events", &self.events)
            .field("packets", &self.entries.len())
            .finish()
    }
}

impl Encoder for Aedat4Encoder {
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let compressor = compressor(&self.options)?;
        let info_node = io_header::event_stream_info_node(
            info,
            self.options.compression,
            Some("Array of events (polarity ON/OFF)."),
        );
        let header = io_header::build(self.options.compression, -1, &info_node);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header);
        let mut writer = PacketWriter::new(compressor, &self.options, info);
        writer.written = (MAGIC.len() + header.len()) as u64;
        self.state = State::Writing {
            writer: Box::new(writer),
            info_node,
        };
        self.patch = None;
        Ok(())
    }

    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.writer()?.encode(events, out)
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let compression = self.options.compression;
        let data_table = self.options.data_table;
        let writer = self.writer()?;
        writer.flush(out)?;
        if data_table {
            let position = i64::try_from(writer.written)
                .map_err(|_| EncodeError::Compress("output exceeds i64 bytes".to_string()))?;
            let table = data_table::build(&writer.entries);
            writer.compressor_compress(&table, out)?;
            if let State::Writing { info_node, .. } = &self.state {
                self.patch = Some(HeaderPatch {
                    offset: MAGIC.len() as u64,
                    bytes: io_header::build(compression, position, info_node),
                });
            }
        }
        self.state = State::Done;
        Ok(())
    }
}

impl PacketWriter {
    /// Appends `raw` compressed with the stream's codec (for the FileDataTable).
    fn compressor_compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.compressor.compress(raw, &mut self.body)?;
        out.extend_from_slice(&self.body);
        self.written += self.body.len() as u64;
        Ok(())
    }
}

/// Why [`write_file`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteFileError {
    /// The file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// An event or setting could not be encoded.
    #[error("{0}")]
    Encode(#[from] EncodeError),
}

/// Writes `events` to an AEDAT 4.0 file at `path`, with a FileDataTable and the IOHeader's
/// dataTablePosition pointing at it (DV's own layout). Encodes packet by packet, so memory
/// stays at one packet plus the table whatever the number of events.
pub fn write_file(
    path: &Path,
    info: &StreamInfo,
    events: &[Event],
    options: &Aedat4EncoderOptions,
) -> Result<(), WriteFileError> {
    let io = |source| WriteFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = BufWriter::new(File::create(path).map_err(io)?);
    let mut encoder = Aedat4Encoder::new(Aedat4EncoderOptions {
        data_table: true,
        ..options.clone()
    });
    let mut buffer = Vec::new();
    encoder.begin(info, &mut buffer)?;
    for chunk in events.chunks(options.events_per_packet.max(1)) {
        encoder.encode(chunk, &mut buffer)?;
        file.write_all(&buffer).map_err(io)?;
        buffer.clear();
    }
    encoder.end(&mut buffer)?;
    file.write_all(&buffer).map_err(io)?;
    if let Some(patch) = encoder.header_patch() {
        patch.apply(&mut file).map_err(io)?;
    }
    file.flush().map_err(io)?;
    Ok(())
}
