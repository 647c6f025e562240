//! Event-camera container formats: sans-I/O decoders that resume across any chunk split, the
//! encoders, format detection, and the shared error and statistics types. Imports only `event`.
//!
//! # The decoder contract
//! Every decoder follows one contract ([`Decoder`]), written once in `common`:
//! - **Any chunking.** The caller feeds byte chunks of any size (one byte, one megabyte, split
//!   mid-record) and gets exactly the events, the outcome and the [`DecodeStats`] that one
//!   call on the whole input would give. A record split across chunks waits inside the
//!   decoder, bounded by [`DecodeOptions::max_record_bytes`].
//! - **Bounded output.** One [`Decoder::feed`] call appends at most
//!   [`DecodeOptions::max_events_per_feed`] events, whatever the input holds: a small
//!   compressed packet may inflate to millions of events, and those arrive over as many calls
//!   as the bound needs. `feed` returns [`Fed`]: how many input bytes it consumed, and whether
//!   it stopped at the bound (`more`). While `more` is true, call `feed` again with the input
//!   it did not consume (possibly none) before giving it new bytes; once `more` is false it
//!   consumed all of its input. The decoder never keeps more than one record (or one
//!   decompressed packet) of its own, so memory is bounded by the bound and the record size,
//!   not by the input.
//! - **Sticky failure.** After an error, every later call returns the same error.
//! - **Clean ends.** [`Decoder::finish`] reports input that ended mid-record as
//!   [`DecodeErrorKind::Truncated`], never as a clean end of file.
//!
//! A file reader ([`FileReader`]) and a network source drive a decoder the same way: read
//! bytes, `feed` them until `more` is false (handling each batch of events in between), read
//! more; at the end, `finish`.

pub mod aedat2;
pub mod aedat3;
pub mod aedat4;
pub mod atis;
mod common;
pub mod dat;
pub mod detect;
pub mod dv_network;
pub mod es;
pub mod evt2;
pub mod evt3;
pub mod prophesee_header;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::event::{Event, StreamInfo};

pub use common::Sticky;

/// Every container format inflor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// jAER AEDAT 1.0 / 2.0 (`#!AER-DAT2.0`), DVS128 or DAVIS address layout.
    Aedat2,
    /// AEDAT 3.1 (cAER), polarity packets.
    Aedat3,
    /// AEDAT 4.0 file (DV), uncompressed, LZ4 or zstd.
    Aedat4,
    /// The DV network stream: IOHeader then packets, no magic line.
    DvNetwork,
    /// Prophesee EVT 2.0 RAW.
    Evt2,
    /// Prophesee EVT 3.0 RAW.
    Evt3,
    /// Prophesee DAT (CD or Event2D).
    Dat,
    /// ATIS 40-bit `.bin` (N-MNIST, N-Caltech101).
    Atis,
    /// Event Stream `.es` v2 (faery, sepia), DVS type.
    Es,
}

impl Format {
    /// All formats, in detection order.
    pub const ALL: [Format; 9] = [
        Format::Aedat2,
        Format::Aedat3,
        Format::Aedat4,
        Format::DvNetwork,
        Format::Evt2,
        Format::Evt3,
        Format::Dat,
        Format::Atis,
        Format::Es,
    ];

    /// Human-readable name, as printed by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Aedat2 => "AEDAT 2.0",
            Format::Aedat3 => "AEDAT 3.1",
            Format::Aedat4 => "AEDAT 4.0",
            Format::DvNetwork => "DV network stream",
            Format::Evt2 => "EVT 2.0",
            Format::Evt3 => "EVT 3.0",
            Format::Dat => "DAT",
            Format::Atis => "ATIS bin",
            Format::Es => "Event Stream",
        }
    }

    /// A fresh decoder for this format.
    pub fn decoder(self, options: &DecodeOptions) -> Box<dyn Decoder> {
        match self {
            Format::Aedat2 => Box::new(aedat2::Aedat2Decoder::new(options)),
            Format::Aedat3 => Box::new(aedat3::Aedat3Decoder::new(options)),
            Format::Aedat4 => Box::new(aedat4::Aedat4Decoder::new(options)),
            Format::DvNetwork => Box::new(dv_network::DvNetworkDecoder::new(options)),
            Format::Evt2 => Box::new(evt2::Evt2Decoder::new(options)),
            Format::Evt3 => Box::new(evt3::Evt3Decoder::new(options)),
            Format::Dat => Box::new(dat::DatDecoder::new(options)),
            Format::Atis => Box::new(atis::AtisDecoder::new(options)),
            Format::Es => Box::new(es::EsDecoder::new(options)),
        }
    }
}

impl Format {
    /// A fresh encoder writing this format for a stream described by `info`, with each format's
    /// default settings (AEDAT 4.0: LZ4, no FileDataTable since the output may not seek; AEDAT
    /// 2.0: the DVS128 layout for 128×128 streams, the DAVIS layout otherwise, both in
    /// `orientation`).
    pub fn encoder(self, info: &StreamInfo, orientation: JaerOrientation) -> Box<dyn Encoder> {
        match self {
            Format::Aedat2 if (info.width, info.height) == (128, 128) => {
                Box::new(aedat2::Aedat2Encoder::dvs128(orientation))
            }
            Format::Aedat2 => Box::new(aedat2::Aedat2Encoder::davis(
                info.width,
                info.height,
                orientation,
            )),
            Format::Aedat3 => Box::new(aedat3::Aedat3Encoder::new(info.width, info.height)),
            Format::Aedat4 => Box::new(aedat4::Aedat4Encoder::new(
                aedat4::Aedat4EncoderOptions::default(),
            )),
            Format::DvNetwork => Box::new(dv_network::DvNetworkEncoder::new(
                aedat4::Aedat4EncoderOptions::default(),
            )),
            Format::Evt2 => Box::new(evt2::Evt2Encoder::new()),
            Format::Evt3 => Box::new(evt3::Evt3Encoder::new()),
            Format::Dat => Box::new(dat::DatEncoder::new()),
            Format::Atis => Box::new(atis::AtisEncoder::new()),
            Format::Es => Box::new(es::EsEncoder::new()),
        }
    }
}

impl Format {
    /// Whether the stream's resolution is only settled by [`Decoder::finish`]: headerless ATIS
    /// files report the smallest conventional frame that holds every event, so a writer that
    /// needs the size up front must decode the file once first (or be given the size).
    pub fn resolution_settles_at_end(self) -> bool {
        self == Format::Atis
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How jAER (AEDAT 2.0) addresses map to inflor's top-left-origin coordinates, for both
/// address layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum JaerOrientation {
    /// Upright, as the datasets' own tools show it. DVS128 (CIFAR10-DVS, MNIST-DVS):
    /// SpikingJelly's convention, `x = 127 − y_raw`, `y = 127 − x_raw`, ON = raw polarity 0;
    /// the published CIFAR10-DVS models (and the InfLoR authors' pipeline) were trained on
    /// frames built this way, and a model only works on inputs in the orientation it was
    /// trained on. DAVIS: rotated 180°, `x = W − 1 − x_raw`, `y = H − 1 − y_raw`, as jAER and
    /// tonic show it. The default.
    #[default]
    Spikingjelly,
    /// The address bits as stored, for both layouts: `x = x_raw`, `y = y_raw` (as
    /// PyAedatTools reads them); DVS128 ON = raw polarity 0, DAVIS ON = polarity bit 1.
    Raw,
}

/// Address layout of AEDAT 2.0 words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Aedat2Layout {
    /// DVS128: 128×128, `x=(a>>1)&0x7F`, `y=(a>>8)&0x7F`, `pol=a&1`.
    Dvs128,
    /// DAVIS240/346: bit 31 = 0 is a DVS word; APS and IMU words are skipped and counted.
    Davis,
}

/// Options shared by every decoder. Unused fields are ignored by formats they do not apply to.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// The largest record, packet or decompressed buffer a decoder may hold, in bytes.
    /// Anything claiming more is rejected with [`DecodeErrorKind::TooLarge`] before allocation.
    pub max_record_bytes: usize,
    /// Count and skip bad records instead of stopping at the first.
    pub lenient: bool,
    /// Sensor resolution override (width, height); otherwise from the header or the format.
    pub resolution: Option<(u16, u16)>,
    /// AEDAT 2.0 address layout override; otherwise from the header's chip class.
    pub aedat2_layout: Option<Aedat2Layout>,
    /// How AEDAT 2.0 addresses map to pixels (DVS128 and DAVIS layouts).
    pub jaer_orientation: JaerOrientation,
    /// The most events one [`Decoder::feed`] call appends (values below
    /// [`MIN_EVENTS_PER_FEED`] count as that). Memory is bounded by this many events, not by
    /// what a compressed input inflates to.
    pub max_events_per_feed: usize,
}

/// The fewest events a [`Decoder::feed`] call may be bounded to: the most one record of any
/// format yields (an EVT 3.0 vector word, 12 events), so that no record is ever cut.
pub const MIN_EVENTS_PER_FEED: usize = 12;

/// The default [`DecodeOptions::max_events_per_feed`]: 2^18 events, 4 MiB of `Event`s.
pub const DEFAULT_EVENTS_PER_FEED: usize = 1 << 18;

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_record_bytes: 64 << 20,
            lenient: false,
            resolution: None,
            aedat2_layout: None,
            jaer_orientation: JaerOrientation::default(),
            max_events_per_feed: DEFAULT_EVENTS_PER_FEED,
        }
    }
}

/// Non-event records a decoder skipped, by kind, and problems it tolerated. Every count is
/// the same for every chunking of the same input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    /// Input bytes the decoder has taken (decoded, or held as the start of a split record);
    /// after an error, the offset the error names (the bytes before the record at fault).
    pub bytes: u64,
    /// Polarity events emitted.
    pub events: u64,
    /// APS (frame readout) words or frame packets skipped.
    pub frames_skipped: u64,
    /// IMU samples or packets skipped.
    pub imu_skipped: u64,
    /// Trigger / external events skipped.
    pub triggers_skipped: u64,
    /// Other non-polarity records skipped (vendor-specific, special events, unknown packet types
    /// that the format allows).
    pub other_skipped: u64,
    /// Events whose timestamp is earlier than the previous event's. They are kept.
    pub timestamp_regressions: u64,
    /// Bad records counted and skipped in lenient mode.
    pub bad_records_skipped: u64,
    /// The first bad record skipped in lenient mode, as an error message, for reports.
    pub first_bad_record: Option<String>,
}

/// What one [`Decoder::feed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "feed may stop before the end of its input"]
pub struct Fed {
    /// Bytes of the input consumed: decoded, or kept as the start of a record split across
    /// calls. Always the whole input when `more` is false.
    pub consumed: usize,
    /// The call stopped because it appended the most events one call may
    /// ([`DecodeOptions::max_events_per_feed`]). Call `feed` again with
    /// `&input[consumed..]` (possibly empty) before giving it new bytes.
    pub more: bool,
}

/// A decoder: feed it bytes in any chunking, get events (see the module docs for the
/// contract).
pub trait Decoder: Send {
    /// Decodes from the front of `input`, appending at most
    /// [`DecodeOptions::max_events_per_feed`] complete events to `out`, and says how much of
    /// `input` it consumed and whether it stopped at that bound.
    fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) -> Result<Fed, DecodeError>;
    /// Declares the end of input. Fails with [`DecodeErrorKind::Truncated`] if a header,
    /// record or packet is incomplete. Appends the events the decoder still holds, which is
    /// none once a `feed` returned `more == false`.
    fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), DecodeError>;
    /// What the stream says about itself, once its header has been read (or at once for
    /// headerless formats).
    fn info(&self) -> Option<&StreamInfo>;
    /// Counts of skipped records and tolerated problems so far.
    fn stats(&self) -> &DecodeStats;

    /// Feeds all of `input`, calling [`Decoder::feed`] until it is consumed: for input that
    /// is in memory already, where the caller takes every event at once.
    fn feed_all(&mut self, mut input: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        loop {
            let fed = self.feed(input, out)?;
            input = input.get(fed.consumed..).unwrap_or_default();
            if !fed.more {
                return Ok(());
            }
        }
    }
}

/// Where and why decoding stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{format}: at byte {offset}: {kind}")]
pub struct DecodeError {
    /// The format being decoded.
    pub format: Format,
    /// Byte offset in the whole input (not the chunk) of the record at fault.
    pub offset: u64,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    /// Builds an error.
    pub fn new(format: Format, offset: u64, kind: DecodeErrorKind) -> Self {
        Self {
            format,
            offset,
            kind,
        }
    }
}

/// What was wrong with the input: always says what was expected and what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The input ended inside a header, record or packet.
    #[error("truncated {what}: expected {expected} bytes, found {found}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes needed.
        expected: u64,
        /// Bytes available.
        found: u64,
    },
    /// The file does not start with the expected magic.
    #[error("bad magic: expected \"{expected}\", found \"{found}\"")]
    BadMagic {
        /// The magic expected.
        expected: &'static str,
        /// What was there (escaped, shortened).
        found: String,
    },
    /// The header is malformed.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A length field claims more than the configured maximum.
    #[error("{what} claims {claimed} bytes, more than the maximum record size {max}")]
    TooLarge {
        /// What claimed the length.
        what: &'static str,
        /// The claimed length.
        claimed: u64,
        /// The configured maximum.
        max: u64,
    },
    /// Decompression failed or would exceed the maximum.
    #[error("{codec} decompression: {message}")]
    Decompress {
        /// "LZ4" or "zstd".
        codec: &'static str,
        /// What went wrong, including "output exceeds N bytes" for bombs.
        message: String,
    },
    /// A polarity byte other than 0 or 1.
    #[error("polarity byte {0}: expected 0 or 1")]
    BadPolarity(u8),
    /// Event coordinates outside the sensor.
    #[error("event at x={x}, y={y} is outside the {width}x{height} sensor")]
    OutOfRange {
        /// Column found.
        x: i64,
        /// Row found.
        y: i64,
        /// Sensor width.
        width: u16,
        /// Sensor height.
        height: u16,
    },
    /// A stream or packet type the format does not define.
    #[error("unknown stream type {0}")]
    UnknownStreamType(String),
    /// A flatbuffer failed verification.
    #[error("invalid flatbuffer {what}: {message}")]
    Flatbuffer {
        /// Which table.
        what: &'static str,
        /// The verifier's message.
        message: String,
    },
    /// Anything else: what was expected versus what was found.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What the format requires here.
        expected: String,
        /// What the input had.
        found: String,
    },
}

/// Writes events in a container format.
pub trait Encoder {
    /// Writes the header for a stream described by `info`.
    fn begin(&mut self, info: &StreamInfo, out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// Appends events.
    fn encode(&mut self, events: &[Event], out: &mut Vec<u8>) -> Result<(), EncodeError>;
    /// Flushes buffered events and writes any trailer.
    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), EncodeError>;
}

/// Why an event could not be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// The event does not fit the target format (coordinates, timestamp range...).
    #[error("event #{index} ({}) cannot be written: {reason}", describe_event(.event))]
    Unrepresentable {
        /// Index of the event in the whole stream.
        index: u64,
        /// The event.
        event: Event,
        /// Why.
        reason: String,
    },
    /// Compression failed.
    #[error("compression failed: {0}")]
    Compress(String),
}

/// An event as messages show it: `t=5 µs, x=1, y=2, ON`.
fn describe_event(event: &Event) -> String {
    let polarity = if event.polarity { "ON" } else { "OFF" };
    format!("t={} µs, x={}, y={}, {polarity}", event.t, event.x, event.y)
}

/// A fully decoded recording.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The detected or forced format.
    pub format: Format,
    /// What the stream said about itself.
    pub info: StreamInfo,
    /// All events.
    pub events: Vec<Event>,
    /// Skip and problem counts.
    pub stats: DecodeStats,
}

/// Why a file could not be read. The message names the file; the cause, where there is one,
/// is the error's [`source`](std::error::Error::source), not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no bytes at all, which no format allows.
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The format could not be recognised.
    #[error("{path}: unrecognised format (first bytes \"{prefix}\"); pass --format")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// Its first bytes, escaped.
        prefix: String,
    },
    /// The decoder rejected the content.
    #[error("cannot decode {path}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where and why.
        source: DecodeError,
    },
}

/// Chunk size for reading files: large enough to amortise syscalls, small enough to stay in L2.
const READ_CHUNK: usize = 1 << 20;

/// Decodes a file chunk by chunk. Memory stays bounded by the chunk, one record of the
/// decoder's and one batch of at most [`DecodeOptions::max_events_per_feed`] events.
pub struct FileReader {
    path: PathBuf,
    file: Box<dyn Read + Send>,
    format: Format,
    decoder: Box<dyn Decoder>,
    chunk: Vec<u8>,
    /// `chunk[fed..filled]` holds bytes read and not yet consumed by the decoder.
    fed: usize,
    filled: usize,
    /// The last `feed` stopped at the event bound: call it again before reading more.
    more: bool,
    finished: bool,
}

impl FileReader {
    /// Opens a file and detects its format unless `format` is given.
    pub fn open(
        path: &Path,
        format: Option<Format>,
        options: &DecodeOptions,
    ) -> Result<Self, ReadError> {
        let file = std::fs::File::open(path).map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(path, Box::new(file), format, options)
    }

    /// Decodes from any byte source; `name` stands for the path in errors and detection (its
    /// extension is used for headerless formats). An empty source is [`ReadError::Empty`],
    /// whatever the format.
    pub fn from_reader(
        name: &Path,
        mut file: Box<dyn Read + Send>,
        format: Option<Format>,
        options: &DecodeOptions,
    ) -> Result<Self, ReadError> {
        let path = name;
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut filled = 0;
        // Detection needs a prefix: fill the first chunk or reach the end of the file.
        while let Some(free) = chunk.get_mut(filled..).filter(|free| !free.is_empty()) {
            let n = read_some(&mut *file, free).map_err(|source| ReadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let prefix = chunk.get(..filled).unwrap_or_default();
        if prefix.is_empty() {
            return Err(ReadError::Empty {
                path: path.to_path_buf(),
            });
        }
        let format = match format {
            Some(f) => f,
            None => detect::detect(Some(path), prefix).ok_or_else(|| ReadError::UnknownFormat {
                path: path.to_path_buf(),
                prefix: escape_prefix(prefix.get(..32).unwrap_or(prefix)),
            })?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            format,
            decoder: format.decoder(options),
            chunk,
            fed: 0,
            filled,
            more: false,
            finished: false,
        })
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the stream says about itself (after its header was decoded).
    pub fn info(&self) -> Option<&StreamInfo> {
        self.decoder.info()
    }

    /// The decoder's skip and problem counts so far.
    pub fn stats(&self) -> &DecodeStats {
        self.decoder.stats()
    }

    /// The stream info, or an empty one naming the format when the header gave none.
    pub fn info_or_default(&self) -> StreamInfo {
        self.info()
            .cloned()
            .unwrap_or_else(|| StreamInfo::new(0, 0, self.format.name()))
    }

    /// Decodes the next batch, appending at most [`DecodeOptions::max_events_per_feed`]
    /// events to `out`. Returns `Ok(false)` from the call that reached the end of the file and
    /// finished the decoder cleanly (that call may still have appended events), and from
    /// every call after it.
    pub fn next_batch(&mut self, out: &mut Vec<Event>) -> Result<bool, ReadError> {
        if self.finished {
            return Ok(false);
        }
        if self.fed == self.filled && !self.more {
            self.fed = 0;
            self.filled =
                read_some(&mut *self.file, &mut self.chunk).map_err(|source| ReadError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            if self.filled == 0 {
                self.finished = true;
                self.decoder
                    .finish(out)
                    .map_err(|source| ReadError::Decode {
                        path: self.path.clone(),
                        source,
                    })?;
                return Ok(false);
            }
        }
        let input = self.chunk.get(self.fed..self.filled).unwrap_or_default();
        let fed = self
            .decoder
            .feed(input, out)
            .map_err(|source| ReadError::Decode {
                path: self.path.clone(),
                source,
            })?;
        self.fed += fed.consumed;
        self.more = fed.more;
        Ok(true)
    }
}

/// One `read`, retried when a signal interrupted it.
fn read_some(file: &mut (dyn Read + Send), buffer: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buffer) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Reads and decodes a whole file, detecting its format unless `format` is given.
pub fn read_file(
    path: &Path,
    format: Option<Format>,
    options: &DecodeOptions,
) -> Result<Recording, ReadError> {
    let mut reader = FileReader::open(path, format, options)?;
    let mut events = Vec::new();
    while reader.next_batch(&mut events)? {}
    Ok(Recording {
        format: reader.format(),
        info: reader.info_or_default(),
        events,
        stats: reader.stats().clone(),
    })
}

/// Decodes an in-memory input in one call.
pub fn decode_bytes(
    format: Format,
    input: &[u8],
    options: &DecodeOptions,
) -> Result<Recording, DecodeError> {
    let mut decoder = format.decoder(options);
    let mut events = Vec::new();
    decoder.feed_all(input, &mut events)?;
    decoder.finish(&mut events)?;
    let info = decoder
        .info()
        .cloned()
        .unwrap_or_else(|| StreamInfo::new(0, 0, format.name()));
    Ok(Recording {
        format,
        info,
        events,
        stats: decoder.stats().clone(),
    })
}

/// Escapes the first bytes of an input for error messages.
pub fn escape_prefix(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}
