//! Packet-body compression for DV files and streams: bounded LZ4-frame and zstd
//! decompression into a reused buffer, and the matching compressors.
//!
//! DV compresses every packet body (and the FileDataTable) as a self-contained LZ4 frame or
//! zstd frame. Decompressed output is capped at `DecodeOptions::max_record_bytes`: a body that
//! inflates past the cap is rejected after writing at most the cap, so a decompression bomb
//! cannot allocate more. The codec state and the output buffer are reused across packets so
//! the hot path does not allocate.
//!
//! lz4_flex's frame reader cannot say whether a frame ended with its end mark (input that
//! stops at a block boundary reads as a clean end), and it sizes its block buffers from the
//! frame header. So [`lz4_frame_layout`] walks the frame structure first: it rejects frames
//! that end early, and block sizes whose buffers would exceed the cap, before decoding.

use std::ffi::{c_char, c_int};
use std::io::{self, Write};
use std::ptr::NonNull;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
use lz4_sys::{
    LZ4_createStreamDecode, LZ4_decompress_safe, LZ4_decompress_safe_continue,
    LZ4_freeStreamDecode, LZ4_setStreamDecode, LZ4StreamDecode,
};
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use crate::format::EncodeError;

/// The compression an IOHeader declares for every packet of a file or stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Packets are stored as plain size-prefixed flatbuffers.
    None,
    /// LZ4 frames (DV's default; 64 KiB linked blocks).
    #[default]
    Lz4,
    /// LZ4 frames written by the high-compression (HC) compressor. Decoded like `Lz4`.
    Lz4High,
    /// zstd frames.
    Zstd,
    /// zstd frames at a high compression level. Decoded like `Zstd`.
    ZstdHigh,
}

impl Compression {
    /// The value of the IOHeader `compression` field (DV's `CompressionType` enum).
    pub(crate) fn code(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Lz4High => 2,
            Compression::Zstd => 3,
            Compression::ZstdHigh => 4,
        }
    }

    /// The compression for an IOHeader `compression` field value, if it is one DV defines.
    pub(crate) fn from_code(code: i32) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            2 => Some(Compression::Lz4High),
            3 => Some(Compression::Zstd),
            4 => Some(Compression::ZstdHigh),
            _ => None,
        }
    }

    /// The name DV writes in the infoNode's `compression` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "NONE",
            Compression::Lz4 => "LZ4",
            Compression::Lz4High => "LZ4_HIGH",
            Compression::Zstd => "ZSTD",
            Compression::ZstdHigh => "ZSTD_HIGH",
        }
    }

    /// The codec name used in error messages.
    pub(crate) fn codec_name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 | Compression::Lz4High => "LZ4",
            Compression::Zstd | Compression::ZstdHigh => "zstd",
        }
    }
}

/// Why a compressed body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecompressError {
    /// The input stops inside a frame; at least `needed` input bytes in total were required.
    Incomplete {
        /// A lower bound on the input length the frame needs.
        needed: u64,
    },
    /// The output would exceed the limit (a decompression bomb or an oversized record).
    Exceeds(usize),
    /// The frame headers alone declare more output than the limit: rejected without
    /// decompressing anything.
    Declares {
        /// The output the headers promise at least, in bytes.
        floor: u64,
        /// The limit.
        limit: usize,
    },
    /// The body is not a valid frame.
    Corrupt(String),
}

impl DecompressError {
    /// The human-readable reason, for `DecodeErrorKind::Decompress`.
    pub(crate) fn message(&self) -> String {
        match self {
            DecompressError::Incomplete { needed } => {
                format!("input ends inside a frame that needs at least {needed} bytes")
            }
            DecompressError::Exceeds(limit) => format!("output exceeds {limit} bytes"),
            DecompressError::Declares { floor, limit } => format!(
                "the frame headers declare at least {floor} bytes of output, more than the \
                 {limit} bytes allowed (not decompressed)"
            ),
            DecompressError::Corrupt(message) => message.clone(),
        }
    }
}

/// LZ4 frame magic number (little-endian on the wire).
const LZ4_MAGIC: u32 = 0x184D_2204;
/// The LZ4 history window that linked blocks keep.
const LZ4_WINDOW: usize = 64 * 1024;
/// Smallest frame header: magic, FLG, BD, header checksum.
const LZ4_MIN_HEADER: usize = 7;
/// Initial output buffer size; it grows by doubling up to the limit.
const INITIAL_OUTPUT: usize = 256 * 1024;

/// What [`lz4_frame_layout`] learnt about a body's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lz4Layout {
    /// The scratch memory the largest frame's blocks may need: one block plus, for linked
    /// blocks, the history window (see [`Decompressor::lz4_overflows`]).
    pub buffer_bytes: usize,
}

/// The FLG and BD bytes of an LZ4 frame descriptor, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lz4Descriptor {
    /// Blocks may refer back to the previous 64 KiB of the frame's output.
    linked: bool,
    block_checksums: bool,
    content_size: bool,
    content_checksum: bool,
    dict_id: bool,
    /// The largest decompressed (and stored) block the frame may hold.
    max_block: usize,
}

impl Lz4Descriptor {
    /// Decodes FLG and BD, rejecting other versions and unknown block sizes.
    fn parse(flg: u8, bd: u8) -> Result<Self, DecompressError> {
        if flg >> 6 != 1 {
            return Err(DecompressError::Corrupt(format!(
                "LZ4 frame version {} (FLG 0x{flg:02X}), expected 1",
                flg >> 6
            )));
        }
        let max_block = match (bd >> 4) & 0x7 {
            4 => 64 * 1024,
            5 => 256 * 1024,
            6 => 1024 * 1024,
            7 => 4 * 1024 * 1024,
            id => {
                return Err(DecompressError::Corrupt(format!(
                    "LZ4 block size id {id} (BD 0x{bd:02X}), expected 4 to 7"
                )));
            }
        };
        Ok(Self {
            linked: flg & 0x20 == 0,
            block_checksums: flg & 0x10 != 0,
            content_size: flg & 0x08 != 0,
            content_checksum: flg & 0x04 != 0,
            dict_id: flg & 0x01 != 0,
            max_block,
        })
    }

    /// Bytes from the magic number to the header checksum, inclusive.
    fn header_len(self) -> usize {
        LZ4_MIN_HEADER + if self.content_size { 8 } else { 0 } + if self.dict_id { 4 } else { 0 }
    }
}

/// Reads the little-endian u32 at `pos`, or says how much input it needs.
fn read_u32(body: &[u8], pos: usize) -> Result<u32, DecompressError> {
    match body.get(pos..pos.saturating_add(4)) {
        Some(&[a, b, c, d]) => Ok(u32::from_le_bytes([a, b, c, d])),
        _ => Err(DecompressError::Incomplete {
            needed: pos as u64 + 4,
        }),
    }
}

/// Walks the LZ4 frames in `body` without decompressing: every frame must be a standard
/// frame (no legacy or skippable frames) whose blocks and end mark lie inside `body`.
pub(crate) fn lz4_frame_layout(body: &[u8]) -> Result<Lz4Layout, DecompressError> {
    let mut pos = 0usize;
    let mut buffer_bytes = 0usize;
    // A packet body holds one frame; concatenated frames are valid LZ4 input, so accept them.
    loop {
        let magic = read_u32(body, pos)?;
        if magic != LZ4_MAGIC {
            return Err(DecompressError::Corrupt(format!(
                "expected LZ4 frame magic 0x{LZ4_MAGIC:08X} at body byte {pos}, found 0x{magic:08X}"
            )));
        }
        let (flg, bd) = match body.get(pos + 4..pos + 6) {
            Some(&[flg, bd]) => (flg, bd),
            _ => {
                return Err(DecompressError::Incomplete {
                    needed: (pos + LZ4_MIN_HEADER) as u64,
                });
            }
        };
        let descriptor = Lz4Descriptor::parse(flg, bd)?;
        let max_block = descriptor.max_block;
        let scratch = if descriptor.linked {
            max_block + LZ4_WINDOW
        } else {
            max_block
        };
        buffer_bytes = buffer_bytes.max(scratch);
        pos += descriptor.header_len();
        if pos > body.len() {
            return Err(DecompressError::Incomplete { needed: pos as u64 });
        }
        loop {
            let block = read_u32(body, pos)?;
            pos += 4;
            if block == 0 {
                if descriptor.content_checksum {
                    pos += 4;
                }
                break;
            }
            let len = (block & 0x7FFF_FFFF) as usize;
            if len > max_block {
                return Err(DecompressError::Corrupt(format!(
                    "LZ4 block of {len} bytes in a frame whose blocks hold at most {max_block}"
                )));
            }
            pos = pos + len + if descriptor.block_checksums { 4 } else { 0 };
            if pos > body.len() {
                return Err(DecompressError::Incomplete { needed: pos as u64 });
            }
        }
        if pos > body.len() {
            return Err(DecompressError::Incomplete { needed: pos as u64 });
        }
        if pos == body.len() {
            return Ok(Lz4Layout { buffer_bytes });
        }
    }
}

/// The xxHash32 (seed 0) that LZ4 frames use for every checksum.
fn xxh32(bytes: &[u8]) -> u32 {
    twox_hash::XxHash32::oneshot(0, bytes)
}

/// liblz4's streaming-decode state. It is used only to name the dictionary (the previous
/// output of the frame, just before the destination) for the next linked block.
struct Lz4Stream(NonNull<LZ4StreamDecode>);

impl Lz4Stream {
    fn new() -> Option<Self> {
        // SAFETY: plain allocation; a null result (out of memory) is handled by the caller.
        NonNull::new(unsafe { LZ4_createStreamDecode() }).map(Self)
    }
}

impl Drop for Lz4Stream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from LZ4_createStreamDecode and is freed only here.
        unsafe {
            LZ4_freeStreamDecode(self.0.as_ptr());
        }
    }
}

// SAFETY: the state is owned exclusively; the dictionary pointers it holds are set right
// before each decode from the buffer being decoded into, and never read afterwards.
unsafe impl Send for Lz4Stream {}

/// Decodes one LZ4 block `src` into `out[at..]` (at most `out.len() - at` bytes), with
/// `out[dict_start..at]` (at most the 64 KiB window) as the preceding output that linked
/// blocks may copy from. Returns the decoded length, or `None` if the block is invalid or
/// does not fit.
fn decode_block(
    stream: &mut Option<Lz4Stream>,
    src: &[u8],
    out: &mut [u8],
    dict_start: usize,
    at: usize,
) -> Option<usize> {
    debug_assert!(at - dict_start.min(at) <= LZ4_WINDOW);
    let capacity = c_int::try_from(out.len().checked_sub(at)?).ok()?;
    let dict_len = c_int::try_from(at.checked_sub(dict_start)?).ok()?;
    let src_len = c_int::try_from(src.len()).ok()?;
    let base = out.as_mut_ptr();
    let written = if dict_len == 0 {
        // SAFETY: `at <= out.len()` (checked above), so `base + at` with `capacity` bytes
        // lies inside `out`; liblz4's safe decoder never reads past `src_len` input bytes
        // nor writes past `capacity` output bytes, whatever the input.
        unsafe {
            LZ4_decompress_safe(
                src.as_ptr().cast::<c_char>(),
                base.add(at).cast::<c_char>(),
                src_len,
                capacity,
            )
        }
    } else {
        if stream.is_none() {
            *stream = Lz4Stream::new();
        }
        let state = stream.as_mut()?.0.as_ptr();
        // SAFETY: `dict_start <= at <= out.len()` (checked above), so the dictionary
        // `out[dict_start..at]` and the destination `out[at..]` both lie inside `out` and do
        // not overlap; the decoder reads matches only from the dictionary and from what it
        // has written, and is bounded by `src_len` and `capacity` as above.
        unsafe {
            LZ4_setStreamDecode(state, base.add(dict_start).cast_const(), dict_len);
            LZ4_decompress_safe_continue(state, src.as_ptr(), base.add(at), src_len, capacity)
        }
    };
    usize::try_from(written).ok()
}

/// Decompresses packet bodies with one codec into a buffer reused across packets.
pub(crate) struct Decompressor {
    compression: Compression,
    max_output: usize,
    /// Decompressed bytes; only a prefix is valid after each call. Never shrinks, so steady
    /// state does not allocate.
    output: Vec<u8>,
    /// liblz4's state for linked blocks, created on first use.
    lz4: Option<Lz4Stream>,
    /// Room to tell an LZ4 block that overflows the output limit from a corrupt one.
    lz4_scratch: Vec<u8>,
    zstd: Option<ZstdDecoder<'static>>,
}

impl Decompressor {
    /// A decompressor for `compression` whose output never exceeds `max_output` bytes.
    pub(crate) fn new(compression: Compression, max_output: usize) -> Self {
        Self {
            compression,
            max_output,
            output: Vec::new(),
            lz4: None,
            lz4_scratch: Vec::new(),
            zstd: None,
        }
    }

    /// Decompresses `body` (returned as is when uncompressed).
    pub(crate) fn decompress<'a>(
        &'a mut self,
        body: &'a [u8],
    ) -> Result<&'a [u8], DecompressError> {
        let len = match self.compression {
            Compression::None => {
                if body.len() > self.max_output {
                    return Err(DecompressError::Exceeds(self.max_output));
                }
                return Ok(body);
            }
            Compression::Lz4 | Compression::Lz4High => self.lz4(body)?,
            Compression::Zstd | Compression::ZstdHigh => self.zstd(body)?,
        };
        Ok(self.output.get(..len).unwrap_or_default())
    }

    /// Decodes every LZ4 frame in `body` block by block straight into `output`: no
    /// intermediate block buffer, and linked blocks use the output itself as their history.
    fn lz4(&mut self, body: &[u8]) -> Result<usize, DecompressError> {
        let layout = lz4_frame_layout(body)?;
        if layout.buffer_bytes > self.max_output {
            return Err(DecompressError::Corrupt(format!(
                "LZ4 frame block size needs {} bytes of buffers, more than the limit of {} bytes",
                layout.buffer_bytes, self.max_output
            )));
        }
        let mut filled = 0;
        let mut pos = 0;
        while pos < body.len() {
            pos = self.lz4_frame(body, pos, &mut filled)?;
        }
        Ok(filled)
    }

    /// Decodes the frame at `body[pos..]` (already walked by [`lz4_frame_layout`]) onto
    /// `output[*filled..]`; returns where the next frame starts.
    fn lz4_frame(
        &mut self,
        body: &[u8],
        mut pos: usize,
        filled: &mut usize,
    ) -> Result<usize, DecompressError> {
        let (flg, bd) = match body.get(pos + 4..pos + 6) {
            Some(&[flg, bd]) => (flg, bd),
            _ => {
                return Err(DecompressError::Incomplete {
                    needed: (pos + LZ4_MIN_HEADER) as u64,
                });
            }
        };
        let descriptor = Lz4Descriptor::parse(flg, bd)?;
        if flg & 0x02 != 0 || bd & 0x8F != 0 {
            return Err(DecompressError::Corrupt(format!(
                "LZ4 frame reserved bits set (FLG 0x{flg:02X}, BD 0x{bd:02X})"
            )));
        }
        if descriptor.dict_id {
            return Err(DecompressError::Corrupt(
                "LZ4 frame needs a preset dictionary, which DV never uses".to_string(),
            ));
        }
        let header_end = pos + descriptor.header_len();
        let (Some(fields), Some(&checksum)) =
            (body.get(pos + 4..header_end - 1), body.get(header_end - 1))
        else {
            return Err(DecompressError::Incomplete {
                needed: header_end as u64,
            });
        };
        if (xxh32(fields) >> 8) as u8 != checksum {
            return Err(DecompressError::Corrupt(format!(
                "LZ4 frame header checksum 0x{checksum:02X} does not match its descriptor"
            )));
        }
        let content_size = match fields.get(2..10) {
            Some(&[a, b, c, d, e, f, g, h]) if descriptor.content_size => {
                let size = u64::from_le_bytes([a, b, c, d, e, f, g, h]);
                // The frame states its size up front: reject a bomb before decoding it.
                if size > (self.max_output - *filled) as u64 {
                    return Err(DecompressError::Exceeds(self.max_output));
                }
                Some(size)
            }
            _ => None,
        };
        pos = header_end;
        let frame_start = *filled;
        loop {
            let word = read_u32(body, pos)?;
            pos += 4;
            if word == 0 {
                break;
            }
            let len = (word & 0x7FFF_FFFF) as usize;
            let Some(data) = body.get(pos..pos + len) else {
                return Err(DecompressError::Incomplete {
                    needed: (pos + len) as u64,
                });
            };
            let block_at = pos - 4;
            pos += len;
            if descriptor.block_checksums {
                let stored = read_u32(body, pos)?;
                pos += 4;
                if xxh32(data) != stored {
                    return Err(DecompressError::Corrupt(format!(
                        "LZ4 block at body byte {block_at} fails its checksum"
                    )));
                }
            }
            if word & 0x8000_0000 != 0 {
                // An incompressible block, stored as is.
                let room = self.output_room(*filled, len);
                if room < len {
                    return Err(DecompressError::Exceeds(self.max_output));
                }
                let Some(dst) = self.output.get_mut(*filled..*filled + len) else {
                    return Err(DecompressError::Exceeds(self.max_output));
                };
                dst.copy_from_slice(data);
                *filled += len;
                continue;
            }
            let room = self.output_room(*filled, descriptor.max_block);
            let dict_start = if descriptor.linked {
                filled.saturating_sub(LZ4_WINDOW).max(frame_start)
            } else {
                *filled
            };
            let out = self.output.get_mut(..*filled + room).unwrap_or_default();
            match decode_block(&mut self.lz4, data, out, dict_start, *filled) {
                Some(written) => *filled += written,
                None if room < descriptor.max_block
                    && self.lz4_overflows(data, dict_start, *filled, descriptor.max_block) =>
                {
                    return Err(DecompressError::Exceeds(self.max_output));
                }
                None => {
                    return Err(DecompressError::Corrupt(format!(
                        "invalid LZ4 frame: the block at body byte {block_at} does not decode"
                    )));
                }
            }
        }
        if descriptor.content_checksum {
            let stored = read_u32(body, pos)?;
            pos += 4;
            let content = self.output.get(frame_start..*filled).unwrap_or_default();
            if xxh32(content) != stored {
                return Err(DecompressError::Corrupt(
                    "LZ4 frame content fails its checksum".to_string(),
                ));
            }
        }
        let decoded = (*filled - frame_start) as u64;
        if let Some(size) = content_size
            && size != decoded
        {
            return Err(DecompressError::Corrupt(format!(
                "LZ4 frame declares {size} content bytes but decodes to {decoded}"
            )));
        }
        Ok(pos)
    }

    /// Makes `output[filled..]` hold up to `want` bytes without passing the limit (growing
    /// by doubling); returns how many it holds.
    fn output_room(&mut self, filled: usize, want: usize) -> usize {
        let end = filled.saturating_add(want).min(self.max_output);
        if self.output.len() < end {
            let doubled = self.output.len().saturating_mul(2).max(INITIAL_OUTPUT);
            self.output.resize(end.max(doubled.min(self.max_output)), 0);
        }
        end.saturating_sub(filled)
    }

    /// Whether a block that failed to decode into the room left under the limit decodes
    /// with a whole block of room: then it is valid output past the limit, not corruption.
    fn lz4_overflows(
        &mut self,
        data: &[u8],
        dict_start: usize,
        filled: usize,
        max_block: usize,
    ) -> bool {
        let dict = self.output.get(dict_start..filled).unwrap_or_default();
        self.lz4_scratch.clear();
        self.lz4_scratch.extend_from_slice(dict);
        self.lz4_scratch.resize(dict.len() + max_block, 0);
        decode_block(&mut self.lz4, data, &mut self.lz4_scratch, 0, dict.len()).is_some()
    }

    fn zstd(&mut self, body: &[u8]) -> Result<usize, DecompressError> {
        let corrupt = |e: io::Error| DecompressError::Corrupt(format!("invalid zstd frame: {e}"));
        // One-shot compressors record the content size, and raw and RLE blocks say theirs:
        // reject a bomb whose headers give it away before decoding any of it.
        if let Some(floor) = zstd_floor(body)
            && floor > self.max_output as u64
        {
            return Err(DecompressError::Declares {
                floor,
                limit: self.max_output,
            });
        }
        let mut decoder = match self.zstd.take() {
            Some(mut decoder) => {
                decoder.reinit().map_err(corrupt)?;
                decoder
            }
            None => {
                let mut decoder = ZstdDecoder::new().map_err(corrupt)?;
                // Caps the window zstd allocates to the output limit (a frame may declare up
                // to 2 GiB): frames needing more fail instead of allocating.
                let window_log = usize::BITS - 1 - self.max_output.max(1).leading_zeros();
                decoder
                    .set_parameter(DParameter::WindowLogMax(window_log.clamp(10, 31)))
                    .map_err(corrupt)?;
                decoder
            }
        };
        let result = zstd_bounded(&mut decoder, body, &mut self.output, self.max_output);
        if result.is_ok() {
            self.zstd = Some(decoder);
        }
        result
    }
}

/// zstd's frame magic number (little-endian on the wire).
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// A lower bound on what the zstd frames of `body` decompress to, read from their headers
/// alone, without decoding: each frame's declared content size, else the sizes of its raw and
/// RLE blocks (a compressed block may regenerate anything up to 128 KiB, so it counts 0).
/// Skippable frames count nothing. `None` where the structure is not valid as far as walked;
/// the decoder then says what is wrong. The walk visits each block header once.
fn zstd_floor(body: &[u8]) -> Option<u64> {
    let byte = |at: usize| body.get(at).copied();
    let le = |at: usize, len: usize| -> Option<u64> {
        let bytes = body.get(at..at.checked_add(len)?)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |value, &b| (value << 8) | u64::from(b)),
        )
    };
    let mut pos = 0usize;
    let mut total = 0u64;
    while pos < body.len() {
        let magic = le(pos, 4)? as u32;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            let size = usize::try_from(le(pos + 4, 4)?).ok()?;
            pos = pos.checked_add(8)?.checked_add(size)?;
            continue;
        }
        if magic != ZSTD_MAGIC {
            return None;
        }
        let descriptor = byte(pos + 4)?;
        let single_segment = descriptor & 0x20 != 0;
        let mut at = pos + 5 + usize::from(!single_segment);
        at += [0, 1, 2, 4][usize::from(descriptor & 3)];
        let content_size_bytes = match descriptor >> 6 {
            0 => usize::from(single_segment),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        let declared = match content_size_bytes {
            0 => None,
            // The two-byte field is stored minus 256.
            2 => Some(le(at, 2)? + 256),
            n => Some(le(at, n)?),
        };
        at += content_size_bytes;
        let mut blocks = 0u64;
        loop {
            let header = le(at, 3)?;
            at += 3;
            let size = (header >> 3) as usize;
            match (header >> 1) & 3 {
                0 => {
                    blocks = blocks.saturating_add(size as u64);
                    at = at.checked_add(size)?;
                }
                1 => {
                    blocks = blocks.saturating_add(size as u64);
                    at += 1;
                }
                2 => at = at.checked_add(size)?,
                _ => return None,
            }
            if header & 1 == 1 {
                break;
            }
        }
        if descriptor & 0x04 != 0 {
            at += 4;
        }
        if at > body.len() {
            return None;
        }
        total = total.saturating_add(declared.unwrap_or(0).max(blocks));
        pos = at;
    }
    Some(total)
}

/// Grows `output` (doubling, up to `max`) so that `output[filled..]` is not empty.
/// Returns `false` when `output` already holds `max` bytes.
fn grow(output: &mut Vec<u8>, filled: usize, max: usize) -> bool {
    if filled < output.len() {
        return true;
    }
    if output.len() >= max {
        return false;
    }
    let target = output
        .len()
        .max(INITIAL_OUTPUT / 2)
        .saturating_mul(2)
        .min(max);
    output.resize(target, 0);
    true
}

/// Decompresses every zstd frame in `body` into `output`, failing past `max` bytes.
fn zstd_bounded(
    decoder: &mut ZstdDecoder<'static>,
    body: &[u8],
    output: &mut Vec<u8>,
    max: usize,
) -> Result<usize, DecompressError> {
    let corrupt = |e: io::Error| DecompressError::Corrupt(format!("invalid zstd frame: {e}"));
    let mut input = InBuffer::around(body);
    let mut filled = 0;
    // zstd returns 0 once a frame is fully decoded and flushed; an empty body has no frame.
    let mut frame_done = false;
    loop {
        if frame_done && input.pos() == body.len() {
            return Ok(filled);
        }
        let full = !grow(output, filled, max);
        let mut probe = [0u8; 1];
        let space: &mut [u8] = if full {
            &mut probe
        } else {
            output.get_mut(filled..).unwrap_or_default()
        };
        let before = input.pos();
        let mut out = OutBuffer::around(space);
        let hint = decoder.run(&mut input, &mut out).map_err(corrupt)?;
        let written = out.pos();
        if full && written > 0 {
            return Err(DecompressError::Exceeds(max));
        }
        filled += written;
        frame_done = hint == 0;
        if frame_done || written > 0 {
            continue;
        }
        if input.pos() == body.len() {
            // Nothing written, all input read, frame unfinished: the frame needs more input.
            return Err(DecompressError::Incomplete {
                needed: body.len() as u64 + hint as u64,
            });
        }
        if input.pos() == before {
            return Err(DecompressError::Corrupt(
                "zstd decoder made no progress".to_string(),
            ));
        }
    }
}

/// Compresses packet bodies for the encoders.
pub(crate) struct Compressor {
    compression: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

/// zstd level for [`Compression::Zstd`]: zstd's own default, as DV uses.
const ZSTD_LEVEL: i32 = 3;
/// zstd level for [`Compression::ZstdHigh`]: the highest level that needs no "ultra" window.
const ZSTD_HIGH_LEVEL: i32 = 19;

impl Compressor {
    /// A compressor; fails for [`Compression::Lz4High`], which needs an LZ4 HC compressor.
    pub(crate) fn new(compression: Compression) -> Result<Self, EncodeError> {
        let zstd = match compression {
            Compression::Lz4High => {
                return Err(EncodeError::Compress(
                    "LZ4_HIGH needs an LZ4 HC compressor, which inflor does not include; \
                     use LZ4 (same frame format, readers decode both alike)"
                        .to_string(),
                ));
            }
            Compression::Zstd | Compression::ZstdHigh => {
                let level = if compression == Compression::Zstd {
                    ZSTD_LEVEL
                } else {
                    ZSTD_HIGH_LEVEL
                };
                Some(
                    zstd::bulk::Compressor::new(level)
                        .map_err(|e| EncodeError::Compress(e.to_string()))?,
                )
            }
            Compression::None | Compression::Lz4 => None,
        };
        Ok(Self { compression, zstd })
    }

    /// Replaces the contents of `out` with `raw` compressed (or as is).
    pub(crate) fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let failed = |e: io::Error| EncodeError::Compress(e.to_string());
        out.clear();
        match self.compression {
            Compression::None => out.extend_from_slice(raw),
            Compression::Lz4 | Compression::Lz4High => {
                // DV's settings: 64 KiB linked blocks, no checksums.
                let info = FrameInfo::new()
                    .block_size(BlockSize::Max64KB)
                    .block_mode(BlockMode::Linked);
                let mut encoder = FrameEncoder::with_frame_info(info, out);
                encoder.write_all(raw).map_err(failed)?;
                encoder
                    .finish()
                    .map_err(|e| EncodeError::Compress(e.to_string()))?;
            }
            Compression::Zstd | Compression::ZstdHigh => {
                let Some(compressor) = self.zstd.as_mut() else {
                    return Err(EncodeError::Compress("zstd compressor missing".to_string()));
                };
                // zstd writes from the start of the vector's buffer, up to its capacity.
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                compressor.compress_to_buffer(raw, out).map_err(failed)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Compressor::new(Compression::Lz4)
            .and_then(|mut c| c.compress(raw, &mut out))
            .map(|()| out)
            .unwrap_or_default()
    }

    fn zstd(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Compressor::new(Compression::Zstd)
            .and_then(|mut c| c.compress(raw, &mut out))
            .map(|()| out)
            .unwrap_or_default()
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_both_codecs_and_reuses_state() {
        for compression in [Compression::Lz4, Compression::Zstd, Compression::None] {
            let mut decompressor = Decompressor::new(compression, 1 << 20);
            for len in [0, 1, 100, 70_000, 300_000] {
                let raw = sample(len);
                let body = match compression {
                    Compression::Lz4 => lz4(&raw),
                    Compression::Zstd => zstd(&raw),
                    _ => raw.clone(),
                };
                assert_eq!(
                    decompressor.decompress(&body),
                    Ok(&raw[..]),
                    "{compression:?} {len}"
                );
            }
        }
    }

    /// `raw` through zstd's streaming compressor, which records no content size.
    fn zstd_streamed(raw: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let written = zstd::stream::write::Encoder::new(&mut body, 3).and_then(|mut encoder| {
            encoder.write_all(raw)?;
            encoder.finish().map(|_| ())
        });
        assert!(written.is_ok());
        body
    }

    #[test]
    fn streamed_zstd_bomb_stops_in_the_bounded_loop() {
        // No content size and compressed blocks (a repeated 16-byte event, not one repeated
        // byte): only the output cap stops it.
        let pattern: Vec<u8> = (0..5 << 20).map(|i| (i % 16) as u8 * 17).collect();
        let body = zstd_streamed(&pattern);
        assert_eq!(zstd_floor(&body), Some(0));
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&body),
            Ok(None)
        ));
        let mut decompressor = Decompressor::new(Compression::Zstd, 4 << 20);
        assert_eq!(
            decompressor.decompress(&body),
            Err(DecompressError::Exceeds(4 << 20))
        );
        assert!(decompressor.output.len() <= 4 << 20);
    }

    #[test]
    fn zstd_headers_give_a_floor_without_decoding() {
        let zeros = vec![0u8; 3 << 20];
        // Streamed zeros: no content size, but RLE blocks that say how much they expand to.
        let streamed = zstd_streamed(&zeros);
        let floor = zstd_floor(&streamed).unwrap();
        assert!(floor > 2 << 20 && floor <= 3 << 20, "{floor}");
        // Concatenated frames add up; a skippable frame counts nothing.
        let one_shot = zstd(&sample(1000));
        let mut body = one_shot.clone();
        body.extend_from_slice(&[0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        body.extend_from_slice(&one_shot);
        assert_eq!(zstd_floor(&body), Some(2000));
        // A bomb whose headers give it away is refused before any output exists.
        let mut decompressor = Decompressor::new(Compression::Zstd, 1 << 20);
        assert!(matches!(
            decompressor.decompress(&streamed),
            Err(DecompressError::Declares { .. })
        ));
        assert!(decompressor.output.is_empty(), "nothing was decoded");
        assert_eq!(zstd_floor(b"not zstd"), None);
        assert_eq!(zstd_floor(&one_shot[..one_shot.len() - 1]), None);
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let zeros = vec![0u8; 5 << 20];
        for (compression, body) in [
            (Compression::Lz4, lz4(&zeros)),
            (Compression::Zstd, zstd(&zeros)),
        ] {
            let mut decompressor = Decompressor::new(compression, 1 << 20);
            let expected = if compression == Compression::Zstd {
                // The one-shot frame declares its size: refused before decoding.
                DecompressError::Declares {
                    floor: 5 << 20,
                    limit: 1 << 20,
                }
            } else {
                DecompressError::Exceeds(1 << 20)
            };
            assert_eq!(decompressor.decompress(&body), Err(expected));
            assert!(decompressor.output.len() <= 1 << 20);
            // Exactly at the limit is accepted.
            let mut exact = Decompressor::new(compression, 5 << 20);
            assert_eq!(exact.decompress(&body).map(<[u8]>::len), Ok(5 << 20));
        }
    }

    #[test]
    fn truncated_frames_are_incomplete_and_state_recovers() {
        let raw = sample(200_000);
        for (compression, body) in [
            (Compression::Lz4, lz4(&raw)),
            (Compression::Zstd, zstd(&raw)),
        ] {
            let mut decompressor = Decompressor::new(compression, 1 << 20);
            for cut in [0, 3, 7, body.len() / 2, body.len() - 4, body.len() - 1] {
                let result = decompressor.decompress(&body[..cut]);
                assert!(
                    matches!(result, Err(DecompressError::Incomplete { .. })),
                    "{compression:?} cut {cut}: {result:?}"
                );
            }
            assert_eq!(decompressor.decompress(&body), Ok(&raw[..]));
        }
    }

    #[test]
    fn lz4_rejects_garbage_and_huge_blocks() {
        let mut decompressor = Decompressor::new(Compression::Lz4, 1 << 20);
        assert!(matches!(
            decompressor.decompress(b"not an lz4 frame"),
            Err(DecompressError::Corrupt(_))
        ));
        // A frame header announcing 4 MiB linked blocks needs 12 MiB of buffers.
        let mut body = lz4(&sample(10));
        if let Some(bd) = body.get_mut(5) {
            *bd = 0x70;
        }
        assert!(matches!(
            decompressor.decompress(&body),
            Err(DecompressError::Corrupt(m)) if m.contains("buffers")
        ));
    }

    #[test]
    fn dv_lz4_frame_header_matches_dv_processing() {
        // FLG 0x40 (version 1, linked blocks, no checksums), BD 0x40 (64 KiB blocks), as in
        // the dv-processing network capture.
        assert_eq!(
            lz4(b"x").get(..6),
            Some(&[0x04, 0x22, 0x4D, 0x18, 0x40, 0x40][..])
        );
    }

    /// An LZ4 frame with every option lz4_flex can write.
    fn lz4_with(raw: &[u8], info: FrameInfo) -> Vec<u8> {
        let mut encoder = FrameEncoder::with_frame_info(info, Vec::new());
        match encoder.write_all(raw) {
            Ok(()) => encoder.finish().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Bytes LZ4 cannot compress, so that the frame stores its blocks uncompressed.
    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn lz4_decodes_every_frame_option() {
        let mut decompressor = Decompressor::new(Compression::Lz4, 4 << 20);
        for raw in [sample(300_000), noise(150_000), Vec::new()] {
            for mode in [BlockMode::Linked, BlockMode::Independent] {
                for size in [BlockSize::Max64KB, BlockSize::Max256KB] {
                    for flags in 0..8u8 {
                        let info = FrameInfo::new()
                            .block_mode(mode)
                            .block_size(size)
                            .block_checksums(flags & 1 != 0)
                            .content_checksum(flags & 2 != 0)
                            .content_size((flags & 4 != 0).then_some(raw.len() as u64));
                        let body = lz4_with(&raw, info);
                        assert_eq!(
                            decompressor.decompress(&body),
                            Ok(&raw[..]),
                            "{mode:?} {size:?} flags {flags} len {}",
                            raw.len()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn lz4_concatenated_frames_decode_in_order() {
        let (first, second) = (sample(100_000), noise(70_000));
        let mut body = lz4(&first);
        body.extend_from_slice(&lz4(&second));
        let mut decompressor = Decompressor::new(Compression::Lz4, 1 << 20);
        let decoded = decompressor.decompress(&body).map(<[u8]>::to_vec);
        assert_eq!(decoded, Ok([first, second].concat()));
    }

    #[test]
    fn lz4_checksums_and_sizes_are_checked() {
        let raw = sample(200_000);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(raw.len() as u64));
        let body = lz4_with(&raw, info);
        let mut decompressor = Decompressor::new(Compression::Lz4, 1 << 20);
        let corrupt = |body: &[u8], decompressor: &mut Decompressor| {
            matches!(
                decompressor.decompress(body),
                Err(DecompressError::Corrupt(_))
            )
        };
        // A flipped bit inside the first block's data, in the descriptor's content size,
        // and in the content checksum (the last 4 bytes before nothing).
        for at in [30, 7, body.len() - 1] {
            let mut bad = body.clone();
            if let Some(byte) = bad.get_mut(at) {
                *byte ^= 0x10;
            }
            assert!(corrupt(&bad, &mut decompressor), "flip at {at}");
        }
        // A frame that declares more content than the limit is rejected up front.
        let mut small = Decompressor::new(Compression::Lz4, 150_000);
        assert_eq!(
            small.decompress(&body),
            Err(DecompressError::Exceeds(150_000))
        );
        assert!(small.output.len() <= 150_000);
        assert_eq!(decompressor.decompress(&body), Ok(&raw[..]));
    }

    #[test]
    fn lz4_limit_inside_a_block_is_exceeds_and_bad_blocks_are_corrupt() {
        let raw = sample(300_000);
        let body = lz4(&raw);
        // The limit falls inside the third (linked) block: valid output past the limit.
        let mut decompressor = Decompressor::new(Compression::Lz4, 150_000);
        assert_eq!(
            decompressor.decompress(&body),
            Err(DecompressError::Exceeds(150_000))
        );
        assert!(decompressor.output.len() <= 150_000);
        // The same frame with garbage in that third block is corrupt, not too large.
        let mut bad = body.clone();
        let mut pos = LZ4_MIN_HEADER;
        for _ in 0..2 {
            pos += 4 + read_u32(&body, pos).map_or(0, |len| len as usize);
        }
        let len = read_u32(&body, pos).map_or(0, |len| len as usize);
        assert!(len > 0);
        if let Some(block) = bad.get_mut(pos + 4..pos + 4 + len) {
            block.fill(0xFF);
        }
        assert!(matches!(
            decompressor.decompress(&bad),
            Err(DecompressError::Corrupt(_))
        ));
        assert!(matches!(
            Decompressor::new(Compression::Lz4, 1 << 20).decompress(&bad),
            Err(DecompressError::Corrupt(_))
        ));
    }

    #[test]
    fn lz4_high_cannot_be_written() {
        assert!(Compressor::new(Compression::Lz4High).is_err());
        for code in 0..5 {
            assert_eq!(
                Compression::from_code(code).map(Compression::code),
                Some(code)
            );
        }
        assert_eq!(Compression::from_code(5), None);
    }
}
