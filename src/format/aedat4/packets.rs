//! The sans-I/O packet engine behind both the AEDAT 4.0 file decoder and the DV network
//! stream decoder: header, `[i32 stream id][i32 size][compressed body]` packets, verified
//! flatbuffers, and (files only) the FileDataTable.
//!
//! The input is cut into units: the header (magic line for files, length, IOHeader), one
//! packet, or the data table (everything from `dataTablePosition` to the end). Whole units
//! are decoded straight from the caller's chunk; only a unit split across chunks waits in
//! [`Sticky`]'s carry, so any chunking gives the same units, the same events and the same
//! errors. Every length is checked against `max_record_bytes` before any byte of the unit is
//! kept.
//!
//! A packet may hold more events than one `feed` call may return (a few kilobytes of zstd
//! can hold millions of identical events). Its events are checked whole, then emitted in
//! slices: what does not fit the call waits in the decoder, one packet at most, and the next
//! packet is not read (nor decompressed) until they are all out.

use std::mem;

use aedat::events_generated::{Event as FbEvent, EventPacket};
use aedat::frame_generated::Frame;
use aedat::imus_generated::ImuPacket;
use aedat::triggers_generated::TriggerPacket;
use flatbuffers::{Follow, Verifiable};

use super::compression::{Compression, DecompressError, Decompressor};
use super::data_table::{self, TableEntry};
use super::io_header::{self, IoHeader, StreamKind};
use super::verify::{Reach, size_prefixed_len, verify_buffer};
use crate::event::{Event, StreamInfo};
use crate::format::common::{Cx, RecordDecoder, skip_or_fail};
use crate::format::{DecodeError, DecodeErrorKind, DecodeOptions, DecodeStats, Format};

/// The AEDAT 4.0 magic line.
pub(crate) const MAGIC: &[u8; 14] = b"#!AER-DAT4.0\r\n";
/// Bytes of `[i32 stream id][i32 size]` before each packet body.
const PACKET_HEADER: usize = 8;

/// How the header is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// AEDAT 4.0 file: magic line, i32 IOHeader length, IOHeader; data table allowed.
    File,
    /// DV network stream: u32 IOHeader length, IOHeader with dataTablePosition -1.
    Network,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Packets,
    /// Collecting every byte from `dataTablePosition` to the end of the input.
    DataTable,
}

/// A declared stream as the decoder uses it.
#[derive(Debug, Clone)]
struct Stream {
    id: i32,
    kind: StreamKind,
    /// Events must lie inside `(width, height)` (event streams only).
    bounds: (u16, u16),
    /// Elements in its packets so far, for the data-table cross-check; `None` once a packet
    /// of it was skipped, since its count is then unknown.
    elements: Option<u64>,
}

/// Packets seen, summarised to compare with the FileDataTable without storing them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PacketIndex {
    packets: u64,
    /// Order-sensitive hash of every packet's (body offset, stream id, size).
    fingerprint: u64,
}

impl PacketIndex {
    fn record(&mut self, byte_offset: i64, stream_id: i32, size: i32) {
        self.packets += 1;
        // FxHash-style mixing: cheap and order-sensitive, enough to detect disagreement.
        for value in [
            byte_offset as u64,
            u64::from(stream_id as u32),
            u64::from(size as u32),
        ] {
            self.fingerprint =
                (self.fingerprint.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
}

/// Events of a packet that did not fit the `feed` call that read it, checked already.
#[derive(Debug, Default)]
struct Pending {
    events: Vec<FbEvent>,
    /// The first event not yet emitted.
    next: usize,
    bounds: (u16, u16),
    /// Where the packet is, for the (lenient) skips of its bad events.
    offset: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.next >= self.events.len()
    }
}

/// The shared packet engine: the format side of both [`super::Aedat4Decoder`] (`FILE` true)
/// and [`crate::format::dv_network::DvNetworkDecoder`] (`FILE` false).
pub struct PacketStream<const FILE: bool> {
    options: DecodeOptions,
    phase: Phase,
    /// Everything from `dataTablePosition` on.
    table: Vec<u8>,
    /// Absolute input offset of the current unit.
    offset: u64,
    compression: Compression,
    /// Whether the IOHeader has been read (and `compression` is the stream's).
    header_read: bool,
    data_table_position: Option<u64>,
    /// Declared streams, sorted by id.
    streams: Vec<Stream>,
    info: Option<StreamInfo>,
    decompressor: Decompressor,
    last_t: i64,
    pending: Pending,
    index: PacketIndex,
    /// Packets the FileDataTable lists, once it has been verified against the packets.
    table_packets: Option<u64>,
}

impl<const FILE: bool> PacketStream<FILE> {
    /// How the header is framed.
    const FRAMING: Framing = if FILE {
        Framing::File
    } else {
        Framing::Network
    };

    /// The IOHeader's compression, once read.
    pub(crate) fn compression(&self) -> Option<Compression> {
        self.header_read.then_some(self.compression)
    }

    /// Packets listed by a FileDataTable that matched the file's packets (after `finish`).
    pub(crate) fn table_packets(&self) -> Option<u64> {
        self.table_packets
    }

    fn error(&self, offset: u64, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(Self::FORMAT, offset, kind)
    }

    /// Emits what fits of the events a packet left over.
    fn emit_pending(&mut self, cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        let p = &mut self.pending;
        let end = p.events.len().min(p.next.saturating_add(cx.room()));
        let events = p.events.get(p.next..end).unwrap_or_default();
        let context = Context {
            format: Self::FORMAT,
            offset: p.offset,
            lenient: cx.lenient,
        };
        let result = push_events(
            events,
            p.bounds,
            context,
            cx.stats,
            &mut self.last_t,
            cx.out,
        );
        p.next = end;
        result.map_err(|kind| DecodeError::new(Self::FORMAT, context.offset, kind))
    }
}

impl<const FILE: bool> RecordDecoder for PacketStream<FILE> {
    const FORMAT: Format = if FILE {
        Format::Aedat4
    } else {
        Format::DvNetwork
    };

    fn new(options: &DecodeOptions) -> Self {
        Self {
            options: options.clone(),
            phase: Phase::Header,
            table: Vec::new(),
            offset: 0,
            compression: Compression::None,
            header_read: false,
            data_table_position: None,
            streams: Vec::new(),
            info: None,
            decompressor: Decompressor::new(Compression::None, options.max_record_bytes),
            last_t: i64::MIN,
            pending: Pending::default(),
            index: PacketIndex::default(),
            table_packets: None,
        }
    }

    fn decode(&mut self, input: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<usize, DecodeError> {
        if !self.pending.is_empty() {
            self.emit_pending(cx)?;
            if !self.pending.is_empty() {
                return Ok(0);
            }
        }
        let mut used = 0;
        loop {
            self.offset = at + used as u64;
            let rest = input.get(used..).unwrap_or_default();
            if self.phase == Phase::DataTable {
                self.collect_table(rest)?;
                return Ok(input.len());
            }
            // A packet may hold events: read none without room for them.
            if rest.is_empty() || (self.phase == Phase::Packets && cx.room() == 0) {
                return Ok(used);
            }
            let need = self.unit_len(rest)?;
            let Some(unit) = rest.get(..need) else {
                return Ok(used);
            };
            self.read_unit(unit, cx)?;
            used += need;
            if !self.pending.is_empty() {
                return Ok(used);
            }
        }
    }

    fn need(&self, partial: &[u8]) -> Result<usize, DecodeError> {
        self.unit_len(partial)
    }

    fn finish(&mut self, partial: &[u8], at: u64, cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        self.offset = at;
        self.finish_units(partial, cx)
    }

    fn info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl<const FILE: bool> PacketStream<FILE> {
    /// The length of the unit starting at `self.offset`, judged from its first bytes
    /// `avail`: its full length once its header is in `avail`, else the header's length.
    fn unit_len(&self, avail: &[u8]) -> Result<usize, DecodeError> {
        let max = self.options.max_record_bytes;
        match (self.phase, Self::FRAMING) {
            (Phase::Header, Framing::File) => {
                let Some(magic) = avail.get(..MAGIC.len()) else {
                    return Ok(MAGIC.len());
                };
                if magic != MAGIC {
                    return Err(self.bad_magic(magic));
                }
                match avail.get(MAGIC.len()..MAGIC.len() + 4) {
                    Some(&[a, b, c, d]) => {
                        let length = i32::from_le_bytes([a, b, c, d]);
                        let length = self.header_length(i64::from(length), MAGIC.len() as u64)?;
                        Ok(MAGIC.len() + 4 + length)
                    }
                    _ => Ok(MAGIC.len() + 4),
                }
            }
            (Phase::Header, Framing::Network) => match avail.get(..4) {
                Some(&[a, b, c, d]) => {
                    let length = u32::from_le_bytes([a, b, c, d]);
                    Ok(4 + self.header_length(i64::from(length), 0)?)
                }
                _ => Ok(4),
            },
            (Phase::Packets, _) => {
                let Some(&[_, _, _, _, a, b, c, d]) = avail.get(..PACKET_HEADER) else {
                    return Ok(PACKET_HEADER);
                };
                let size = i32::from_le_bytes([a, b, c, d]);
                let size = usize::try_from(size).map_err(|_| {
                    self.error(
                        self.offset,
                        DecodeErrorKind::Unexpected {
                            expected: "a packet size of 0 or more".to_string(),
                            found: size.to_string(),
                        },
                    )
                })?;
                if size > max {
                    return Err(self.error(
                        self.offset,
                        DecodeErrorKind::TooLarge {
                            what: "packet",
                            claimed: size as u64,
                            max: max as u64,
                        },
                    ));
                }
                let end = self.offset + (PACKET_HEADER + size) as u64;
                if let Some(table) = self.data_table_position
                    && end > table
                {
                    return Err(self.error(
                        self.offset,
                        DecodeErrorKind::Unexpected {
                            expected: format!(
                                "a packet ending by the FileDataTable at byte {table}"
                            ),
                            found: format!("a packet ending at byte {end}"),
                        },
                    ));
                }
                Ok(PACKET_HEADER + size)
            }
            // `decode` handles this phase without cutting units.
            (Phase::DataTable, _) => Err(self.error(
                self.offset,
                DecodeErrorKind::Unexpected {
                    expected: "a header or packet".to_string(),
                    found: "input after the last packet".to_string(),
                },
            )),
        }
    }

    fn bad_magic(&self, found: &[u8]) -> DecodeError {
        self.error(
            0,
            DecodeErrorKind::BadMagic {
                expected: "#!AER-DAT4.0\\r\\n",
                found: crate::format::escape_prefix(found),
            },
        )
    }

    /// Checks an IOHeader length field found at `at`.
    fn header_length(&self, length: i64, at: u64) -> Result<usize, DecodeError> {
        let max = self.options.max_record_bytes;
        if length < 8 {
            return Err(self.error(
                at,
                DecodeErrorKind::BadHeader(format!(
                    "IOHeader length {length}, expected at least 8 bytes"
                )),
            ));
        }
        match usize::try_from(length) {
            Ok(length) if length <= max => Ok(length),
            _ => Err(self.error(
                at,
                DecodeErrorKind::TooLarge {
                    what: "IOHeader",
                    claimed: length as u64,
                    max: max as u64,
                },
            )),
        }
    }

    fn read_unit(&mut self, unit: &[u8], cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        match self.phase {
            Phase::Header => self.read_header(unit)?,
            _ => self.read_packet(unit, cx)?,
        }
        self.offset += unit.len() as u64;
        if self.data_table_position == Some(self.offset) {
            self.phase = Phase::DataTable;
        }
        Ok(())
    }

    fn read_header(&mut self, unit: &[u8]) -> Result<(), DecodeError> {
        let at = match Self::FRAMING {
            Framing::File => MAGIC.len(),
            Framing::Network => 0,
        };
        let format = Self::FORMAT;
        let bad = |message: String| {
            DecodeError::new(format, at as u64, DecodeErrorKind::BadHeader(message))
        };
        let header: IoHeader = io_header::parse(unit.get(at..).unwrap_or_default()).map_err(bad)?;
        let end = unit.len() as u64;
        let position = header.data_table_position;
        self.data_table_position = match (Self::FRAMING, u64::try_from(position)) {
            (_, Err(_)) => None,
            (Framing::Network, Ok(_)) => {
                return Err(bad(format!(
                    "dataTablePosition {position} in a network stream, expected -1"
                )));
            }
            (Framing::File, Ok(p)) if p < end => {
                return Err(bad(format!(
                    "dataTablePosition {p} lies inside the header, which ends at byte {end}"
                )));
            }
            (Framing::File, Ok(p)) => Some(p),
        };
        let mut streams = Vec::with_capacity(header.streams.len());
        for declared in &header.streams {
            let bounds = match (self.options.resolution, declared.size) {
                (Some(resolution), _) => resolution,
                (None, Some(size)) => size,
                (None, None) if declared.kind == StreamKind::Events => {
                    return Err(bad(format!(
                        "event stream {} has no sizeX/sizeY; pass --resolution WxH",
                        declared.id
                    )));
                }
                (None, None) => (0, 0),
            };
            streams.push(Stream {
                id: declared.id,
                kind: declared.kind.clone(),
                bounds,
                elements: Some(0),
            });
        }
        let events = header.streams.iter().find(|s| s.kind == StreamKind::Events);
        let (width, height) = self
            .options
            .resolution
            .or(events.and_then(|s| s.size))
            .unwrap_or((0, 0));
        self.info = Some(StreamInfo {
            source: events.and_then(|s| s.source.clone()),
            ..StreamInfo::new(width, height, Self::FORMAT.name())
        });
        if header
            .streams
            .iter()
            .filter(|s| s.kind == StreamKind::Events)
            .count()
            > 1
        {
            tracing::warn!(
                format = %Self::FORMAT,
                "several event streams: all are decoded, in packet order; the stream info \
                 describes stream {}",
                events.map_or(0, |s| s.id)
            );
        }
        self.streams = streams;
        self.compression = header.compression;
        self.header_read = true;
        self.decompressor = Decompressor::new(header.compression, self.options.max_record_bytes);
        self.phase = Phase::Packets;
        Ok(())
    }

    /// Counts a bad record and goes on (lenient), or fails (strict).
    fn bad_record(
        &self,
        offset: u64,
        kind: DecodeErrorKind,
        cx: &mut Cx<'_>,
    ) -> Result<(), DecodeError> {
        cx.skip_or_fail(self.error(offset, kind))
    }

    fn read_packet(&mut self, unit: &[u8], cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        let offset = self.offset;
        let (Some(&[a, b, c, d, e, f, g, h]), Some(body)) =
            (unit.get(..PACKET_HEADER), unit.get(PACKET_HEADER..))
        else {
            return Err(self.error(
                offset,
                DecodeErrorKind::Truncated {
                    what: "packet header",
                    expected: PACKET_HEADER as u64,
                    found: unit.len() as u64,
                },
            ));
        };
        let stream_id = i32::from_le_bytes([a, b, c, d]);
        let size = i32::from_le_bytes([e, f, g, h]);
        // The table locates a packet by its body, just after the 8-byte packet header.
        self.index
            .record((offset + PACKET_HEADER as u64) as i64, stream_id, size);
        let Ok(position) = self.streams.binary_search_by_key(&stream_id, |s| s.id) else {
            return self.bad_record(
                offset,
                DecodeErrorKind::UnknownStreamType(format!(
                    "packet for stream {stream_id}, which the IOHeader does not declare"
                )),
                cx,
            );
        };
        let Some(stream) = self.streams.get_mut(position) else {
            return Ok(());
        };
        if let StreamKind::Other(identifier) = &stream.kind {
            // A DV type inflor does not read: the format allows it, so skip it when lenient.
            let kind = DecodeErrorKind::UnknownStreamType(format!(
                "stream {stream_id} has type {identifier:?}; inflor reads EVTS, FRME, IMUS and TRIG"
            ));
            stream.elements = None;
            if !cx.lenient {
                return Err(self.error(offset, kind));
            }
            cx.stats.other_skipped += 1;
            return Ok(());
        }
        let start = cx.out.len();
        let context = Context {
            format: Self::FORMAT,
            offset,
            lenient: cx.lenient,
        };
        let result = match self.decompressor.decompress(body) {
            Ok(buffer) => read_body(
                buffer,
                stream,
                context,
                cx,
                &mut self.last_t,
                &mut self.pending,
            ),
            Err(e) => Err(DecodeErrorKind::Decompress {
                codec: self.compression.codec_name(),
                message: e.message(),
            }),
        };
        match result {
            Ok(elements) => {
                stream.elements = stream.elements.map(|n| n + elements);
                Ok(())
            }
            Err(kind) => {
                // A packet is all or nothing: drop the events it already appended.
                cx.out.truncate(start);
                stream.elements = None;
                self.bad_record(offset, kind, cx)
            }
        }
    }

    fn collect_table(&mut self, input: &[u8]) -> Result<(), DecodeError> {
        let max = self.options.max_record_bytes;
        if self.table.len() + input.len() > max {
            return Err(self.error(
                self.offset,
                DecodeErrorKind::Unexpected {
                    expected: format!("a FileDataTable of at most {max} bytes"),
                    found: format!("more than {max} bytes after dataTablePosition"),
                },
            ));
        }
        self.table.extend_from_slice(input);
        Ok(())
    }

    fn finish_units(&mut self, pending: &[u8], cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        let found = pending.len() as u64;
        let truncated = |what, expected: usize| DecodeErrorKind::Truncated {
            what,
            expected: expected as u64,
            found,
        };
        match self.phase {
            Phase::Header => {
                let kind = match Self::FRAMING {
                    Framing::File if pending.len() < MAGIC.len() => {
                        if !MAGIC.starts_with(pending) {
                            return Err(self.bad_magic(pending));
                        }
                        truncated("AEDAT4 magic line", MAGIC.len())
                    }
                    Framing::File if pending.len() < MAGIC.len() + 4 => {
                        truncated("IOHeader length", MAGIC.len() + 4)
                    }
                    Framing::Network if pending.len() < 4 => truncated("IOHeader length", 4),
                    _ => truncated("IOHeader", self.unit_len(pending)?),
                };
                Err(self.error(self.offset, kind))
            }
            Phase::Packets => {
                if !pending.is_empty() {
                    let kind = if pending.len() < PACKET_HEADER {
                        truncated("packet header", PACKET_HEADER)
                    } else {
                        truncated("packet", self.unit_len(pending)?)
                    };
                    return Err(self.error(self.offset, kind));
                }
                if let Some(table) = self.data_table_position {
                    // The input ended before reaching the announced FileDataTable.
                    return Err(self.error(
                        self.offset,
                        DecodeErrorKind::Truncated {
                            what: "packets before the FileDataTable",
                            expected: table,
                            found: self.offset,
                        },
                    ));
                }
                Ok(())
            }
            Phase::DataTable => self.read_table(cx),
        }
    }

    /// Verifies the FileDataTable and checks it against the packets read.
    fn read_table(&mut self, cx: &mut Cx<'_>) -> Result<(), DecodeError> {
        let offset = self.offset;
        let bytes = mem::take(&mut self.table);
        let found = bytes.len() as u64;
        let buffer = match self.decompressor.decompress(&bytes) {
            Ok(buffer) => buffer,
            Err(DecompressError::Incomplete { needed }) => {
                return Err(self.error(
                    offset,
                    DecodeErrorKind::Truncated {
                        what: "FileDataTable",
                        expected: needed,
                        found,
                    },
                ));
            }
            Err(e) => {
                let kind = DecodeErrorKind::Decompress {
                    codec: self.compression.codec_name(),
                    message: format!("FileDataTable: {}", e.message()),
                };
                return self.bad_record(offset, kind, cx);
            }
        };
        let expected = size_prefixed_len(buffer).unwrap_or(4);
        if self.compression == Compression::None && buffer.len() < expected {
            return Err(self.error(
                offset,
                DecodeErrorKind::Truncated {
                    what: "FileDataTable",
                    expected: expected as u64,
                    found,
                },
            ));
        }
        let verdict = match verify_buffer(
            buffer,
            data_table::IDENTIFIER,
            Reach::RootAndFirstVector,
            data_table::verified_root,
        ) {
            Err(message) => Err(DecodeErrorKind::Flatbuffer {
                what: "FileDataTable",
                message,
            }),
            Ok(table) => check_table(
                table.len() as u64,
                table.entries(),
                self.index,
                &self.streams,
            ),
        };
        match verdict {
            Ok(packets) => {
                tracing::debug!(packets, "FileDataTable matches the file's packets");
                self.table_packets = Some(packets);
                Ok(())
            }
            Err(kind) => self.bad_record(offset, kind, cx),
        }
    }
}

/// Compares a verified FileDataTable with what the packets showed.
fn check_table(
    listed: u64,
    entries: impl Iterator<Item = TableEntry>,
    index: PacketIndex,
    streams: &[Stream],
) -> Result<u64, DecodeErrorKind> {
    let mismatch =
        |expected: String, found: String| DecodeErrorKind::Unexpected { expected, found };
    if listed != index.packets {
        return Err(mismatch(
            format!(
                "a FileDataTable listing the file's {} packets",
                index.packets
            ),
            format!("one listing {listed}"),
        ));
    }
    let mut table_index = PacketIndex::default();
    let mut totals: Vec<(i32, i64)> = streams.iter().map(|s| (s.id, 0)).collect();
    for entry in entries {
        table_index.record(entry.byte_offset, entry.stream_id, entry.size);
        if let Ok(i) = totals.binary_search_by_key(&entry.stream_id, |t| t.0)
            && let Some(total) = totals.get_mut(i)
        {
            total.1 = total.1.saturating_add(entry.num_elements);
        }
    }
    if table_index != index {
        return Err(mismatch(
            "FileDataTable packet offsets, stream ids and sizes equal to the file's".to_string(),
            "entries that differ from the packets".to_string(),
        ));
    }
    for (stream, (id, total)) in streams.iter().zip(totals) {
        if let Some(elements) = stream.elements
            && u64::try_from(total).ok() != Some(elements)
        {
            return Err(mismatch(
                format!("the FileDataTable to count stream {id}'s {elements} elements"),
                format!("{total} elements"),
            ));
        }
    }
    Ok(listed)
}

/// Verifies a size-prefixed packet of type `T` with its identifier.
fn verified<'a, T>(
    buffer: &'a [u8],
    identifier: &str,
    reach: Reach,
) -> Result<T::Inner, DecodeErrorKind>
where
    T: Follow<'a> + Verifiable + 'a,
{
    verify_buffer(buffer, identifier, reach, |options, b| {
        flatbuffers::size_prefixed_root_with_opts::<T>(options, b)
    })
    .map_err(|message| DecodeErrorKind::Flatbuffer {
        what: "packet",
        message: format!("{identifier} packet: {message}"),
    })
}

/// Where a packet is, for errors raised while reading its elements.
#[derive(Clone, Copy)]
struct Context {
    format: Format,
    offset: u64,
    lenient: bool,
}

/// Verifies a decompressed packet body of `stream`'s type, appends its events or counts its
/// other elements, and returns how many elements it holds. Events beyond the room `cx`
/// leaves go to `pending`, once every event of the packet has passed the checks that strict
/// mode makes.
fn read_body(
    buffer: &[u8],
    stream: &Stream,
    context: Context,
    cx: &mut Cx<'_>,
    last_t: &mut i64,
    pending: &mut Pending,
) -> Result<u64, DecodeErrorKind> {
    let identifier = stream.kind.identifier();
    let room = cx.room();
    let stats = &mut *cx.stats;
    match stream.kind {
        StreamKind::Events => {
            let packet = verified::<EventPacket>(buffer, identifier, Reach::Root)?;
            let events = packet.elements().unwrap_or_default();
            let Some((now, later)) = events.split_at_checked(room) else {
                push_events(events, stream.bounds, context, stats, last_t, cx.out)?;
                return Ok(events.len() as u64);
            };
            if !context.lenient
                && let Some(kind) = events.iter().find_map(|e| problem(e, stream.bounds))
            {
                return Err(kind);
            }
            push_events(now, stream.bounds, context, stats, last_t, cx.out)?;
            pending.events.clear();
            pending.events.extend_from_slice(later);
            pending.next = 0;
            pending.bounds = stream.bounds;
            pending.offset = context.offset;
            Ok(events.len() as u64)
        }
        StreamKind::Frames => {
            verified::<Frame>(buffer, identifier, Reach::Root)?;
            stats.frames_skipped += 1;
            Ok(1)
        }
        StreamKind::Imu => {
            let packet = verified::<ImuPacket>(buffer, identifier, Reach::RootAndFirstVector)?;
            let n = packet.elements().map_or(0, |e| e.len()) as u64;
            stats.imu_skipped += n;
            Ok(n)
        }
        StreamKind::Triggers => {
            let packet = verified::<TriggerPacket>(buffer, identifier, Reach::RootAndFirstVector)?;
            let n = packet.elements().map_or(0, |e| e.len()) as u64;
            stats.triggers_skipped += n;
            Ok(n)
        }
        StreamKind::Other(_) => Ok(0),
    }
}

// DV's flatbuffer event struct and `Event` share one layout (little-endian i64 t, i16 x,
// i16 y, bool polarity, 3 padding bytes), which lets `append_checked` copy checked packets.
const _: () = {
    assert!(size_of::<FbEvent>() == 16 && size_of::<Event>() == 16);
    assert!(mem::offset_of!(Event, t) == 0 && mem::offset_of!(Event, x) == 8);
    assert!(mem::offset_of!(Event, y) == 10 && mem::offset_of!(Event, polarity) == 12);
};

/// Appends flatbuffer events that [`push_events`] has checked: every polarity byte is 0 or 1
/// and every coordinate non-negative (in range).
fn append_checked(raw: &[FbEvent], out: &mut Vec<Event>) {
    #[cfg(target_endian = "little")]
    {
        out.reserve(raw.len());
        let len = out.len();
        // SAFETY: `reserve` made room for `raw.len()` events after `len`. Both types are 16
        // bytes with the same field offsets (asserted above), the wire integers are
        // little-endian like this target, and the caller checked that every polarity byte
        // is a valid `bool`; padding bytes may hold anything. Byte copies need no alignment,
        // and the source (a decompressed buffer) cannot overlap the vector's spare capacity.
        unsafe {
            std::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                out.as_mut_ptr().add(len).cast::<u8>(),
                size_of_val(raw),
            );
            out.set_len(len + raw.len());
        }
    }
    #[cfg(not(target_endian = "little"))]
    out.extend(raw.iter().map(|event| {
        let [t0, t1, t2, t3, t4, t5, t6, t7, x0, x1, y0, y1, polarity, ..] = event.0;
        Event::new(
            i64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]),
            u16::from_le_bytes([x0, x1]),
            u16::from_le_bytes([y0, y1]),
            polarity == 1,
        )
    }));
}

/// What is wrong with a flatbuffer event on a `bounds` sensor, if anything: a polarity byte
/// other than 0 or 1, or a coordinate off the sensor (negative included).
fn problem(event: &FbEvent, bounds: (u16, u16)) -> Option<DecodeErrorKind> {
    let [_, _, _, _, _, _, _, _, x0, x1, y0, y1, polarity, ..] = event.0;
    let x = i16::from_le_bytes([x0, x1]);
    let y = i16::from_le_bytes([y0, y1]);
    if polarity > 1 {
        Some(DecodeErrorKind::BadPolarity(polarity))
    } else if x < 0 || y < 0 || x as u16 >= bounds.0 || y as u16 >= bounds.1 {
        Some(DecodeErrorKind::OutOfRange {
            x: i64::from(x),
            y: i64::from(y),
            width: bounds.0,
            height: bounds.1,
        })
    } else {
        None
    }
}

/// Converts verified flatbuffer events. The fast path checks every event with branch-free
/// arithmetic, then copies the packet whole; it falls back to the checking loop only when the
/// packet holds a bad one.
fn push_events(
    raw: &[FbEvent],
    bounds: (u16, u16),
    context: Context,
    stats: &mut DecodeStats,
    last_t: &mut i64,
    out: &mut Vec<Event>,
) -> Result<(), DecodeErrorKind> {
    let start = out.len();
    // i16 coordinates: negatives cast to u16 land at 0x8000 and above, so clamping the bound
    // to 0x8000 makes one unsigned compare reject both negative and too-large values.
    let width = bounds.0.min(0x8000);
    let height = bounds.1.min(0x8000);
    let mut previous = *last_t;
    let mut regressions = 0u64;
    let mut invalid = false;
    for event in raw {
        let [t0, t1, t2, t3, t4, t5, t6, t7, x0, x1, y0, y1, polarity, ..] = event.0;
        let t = i64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
        let x = u16::from_le_bytes([x0, x1]);
        let y = u16::from_le_bytes([y0, y1]);
        invalid |= (x >= width) | (y >= height) | (polarity > 1);
        regressions += u64::from(t < previous);
        previous = t;
    }
    if !invalid {
        append_checked(raw, out);
        stats.timestamp_regressions += regressions;
        *last_t = previous;
        return Ok(());
    }
    out.truncate(start);
    let mut previous = *last_t;
    let mut regressions = 0u64;
    for event in raw {
        if let Some(kind) = problem(event, bounds) {
            let error = DecodeError::new(context.format, context.offset, kind);
            if let Err(error) = skip_or_fail(stats, context.lenient, error) {
                return Err(error.kind);
            }
            continue;
        }
        let [t0, t1, t2, t3, t4, t5, t6, t7, x0, x1, y0, y1, polarity, ..] = event.0;
        let t = i64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
        let x = u16::from_le_bytes([x0, x1]);
        let y = u16::from_le_bytes([y0, y1]);
        regressions += u64::from(t < previous);
        previous = t;
        out.push(Event::new(t, x, y, polarity == 1));
    }
    stats.timestamp_regressions += regressions;
    *last_t = previous;
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn raw(t: i64, x: i16, y: i16, polarity: u8) -> FbEvent {
        let mut event = FbEvent::new(t, x, y, false);
        if let Some(byte) = event.0.get_mut(12) {
            *byte = polarity;
        }
        event
    }

    fn context(lenient: bool) -> Context {
        Context {
            format: Format::Aedat4,
            offset: 99,
            lenient,
        }
    }

    /// The reference: what a packet must yield, checked event by event.
    fn expected(raw: &[(i64, i16, i16, u8)], bounds: (u16, u16)) -> Vec<Event> {
        raw.iter()
            .filter(|(_, x, y, p)| {
                *p <= 1 && *x >= 0 && *y >= 0 && (*x as u16) < bounds.0 && (*y as u16) < bounds.1
            })
            .map(|&(t, x, y, p)| Event::new(t, x as u16, y as u16, p == 1))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, rng_seed: proptest::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        /// The branch-free fast path and the checking loop agree: lenient mode keeps exactly
        /// the valid events, strict mode fails exactly when one is invalid.
        #[test]
        fn fast_and_checking_paths_agree(
            events in prop::collection::vec((any::<i64>(), -3i16..70, -3i16..50, prop::sample::select(vec![0u8, 1, 1, 0, 2, 255])), 0..64),
        ) {
            let bounds = (64, 48);
            let packet: Vec<FbEvent> = events.iter().map(|&(t, x, y, p)| raw(t, x, y, p)).collect();
            let want = expected(&events, bounds);
            let bad = events.len() - want.len();

            let mut stats = DecodeStats::default();
            let mut last_t = i64::MIN;
            let mut out = vec![Event::default()];
            let lenient = push_events(&packet, bounds, context(true), &mut stats, &mut last_t, &mut out);
            prop_assert_eq!(lenient, Ok(()));
            prop_assert_eq!(out.get(1..), Some(&want[..]));
            prop_assert_eq!(stats.bad_records_skipped, bad as u64);
            prop_assert_eq!(out.len() - 1, want.len());
            let regressions = want.windows(2).filter(|w| w[1].t < w[0].t).count() as u64;
            prop_assert_eq!(stats.timestamp_regressions, regressions);

            let mut stats = DecodeStats::default();
            let mut out = Vec::new();
            let strict = push_events(&packet, bounds, context(false), &mut stats, &mut i64::MIN.clone(), &mut out);
            prop_assert_eq!(strict.is_err(), bad > 0);
            if bad == 0 {
                prop_assert_eq!(out, want);
            }
        }
    }

    #[test]
    fn strict_errors_name_the_problem() {
        let mut stats = DecodeStats::default();
        let mut out = Vec::new();
        let mut last_t = i64::MIN;
        let bounds = (346, 260);
        let run = |packet: &[FbEvent],
                   out: &mut Vec<Event>,
                   stats: &mut DecodeStats,
                   last_t: &mut i64| {
            push_events(packet, bounds, context(false), stats, last_t, out)
        };
        assert_eq!(
            run(&[raw(1, 5, 5, 2)], &mut out, &mut stats, &mut last_t),
            Err(DecodeErrorKind::BadPolarity(2))
        );
        assert_eq!(
            run(&[raw(1, -1, 5, 1)], &mut out, &mut stats, &mut last_t),
            Err(DecodeErrorKind::OutOfRange {
                x: -1,
                y: 5,
                width: 346,
                height: 260
            })
        );
        assert_eq!(
            run(&[raw(1, 5, 260, 0)], &mut out, &mut stats, &mut last_t),
            Err(DecodeErrorKind::OutOfRange {
                x: 5,
                y: 260,
                width: 346,
                height: 260
            })
        );
        assert!(out.is_empty());
        // Wide sensors: a negative coordinate must not wrap into range.
        let wide = (40_000, 40_000);
        assert!(
            push_events(
                &[raw(1, -30_000, 0, 1)],
                wide,
                context(false),
                &mut stats,
                &mut last_t,
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn packet_index_is_order_sensitive() {
        let mut a = PacketIndex::default();
        a.record(10, 0, 5);
        a.record(23, 1, 7);
        let mut b = PacketIndex::default();
        b.record(23, 1, 7);
        b.record(10, 0, 5);
        assert_eq!(a.packets, b.packets);
        assert_ne!(a, b);
    }
}
