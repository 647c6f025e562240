//! The AEDAT 4.0 FileDataTable (`FTAB`): the index of packets a DV file ends with, read
//! through a verified flatbuffer and written by the file encoder.
//!
//! The `aedat` crate ships no generated code for this schema, and flatc is not part of the
//! build, so the accessors below are written by hand against DV's `FileDataTable.fbs`:
//!
//! ```text
//! struct PacketHeader { StreamID: int32; Size: int32; }
//! table FileDataDefinition { ByteOffset: int64; PacketInfo: PacketHeader; NumElements: int64;
//!                            TimestampStart: int64; TimestampEnd: int64; }
//! table FileDataTable { Table: [FileDataDefinition]; }
//! file_identifier "FTAB";
//! ```

use flatbuffers::{
    FlatBufferBuilder, Follow, ForwardsUOffset, InvalidFlatbuffer, Push, Table, VOffsetT, Vector,
    Verifiable, Verifier, VerifierOptions, WIPOffset,
};

/// The file identifier of a FileDataTable buffer.
pub(crate) const IDENTIFIER: &str = "FTAB";

/// One packet as the table describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TableEntry {
    /// Absolute file offset of the packet's body (8 bytes after its `[stream id][size]`).
    pub byte_offset: i64,
    /// The packet's stream id.
    pub stream_id: i32,
    /// The packet's compressed body size.
    pub size: i32,
    /// Elements in the packet: events, IMU samples, triggers, or 1 for a frame.
    pub num_elements: i64,
    /// Timestamp of the first element.
    pub timestamp_start: i64,
    /// Timestamp of the last element.
    pub timestamp_end: i64,
}

/// The `PacketHeader` struct: two little-endian i32, stored inline in a table.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketHeader([u8; 8]);

impl PacketHeader {
    fn new(stream_id: i32, size: i32) -> Self {
        let mut bytes = [0u8; 8];
        let [a, b, c, d] = stream_id.to_le_bytes();
        let [e, f, g, h] = size.to_le_bytes();
        bytes.copy_from_slice(&[a, b, c, d, e, f, g, h]);
        Self(bytes)
    }

    fn stream_id(&self) -> i32 {
        let [a, b, c, d, ..] = self.0;
        i32::from_le_bytes([a, b, c, d])
    }

    fn size(&self) -> i32 {
        let [.., e, f, g, h] = self.0;
        i32::from_le_bytes([e, f, g, h])
    }
}

impl<'a> Follow<'a> for PacketHeader {
    type Inner = &'a PacketHeader;
    #[inline]
    fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
        // Alignment 1 (a byte array), so the cast is sound wherever the verifier placed it.
        flatbuffers::follow_cast_ref::<PacketHeader>(buf, loc)
    }
}

impl Verifiable for PacketHeader {
    #[inline]
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.in_buffer::<Self>(pos)
    }
}

/// The builder aligns a pushed value to its `Output` type's alignment; the schema's struct
/// holds int32s, so it is pushed as this 4-aligned twin of [`PacketHeader`].
#[repr(C, align(4))]
pub(crate) struct AlignedPacketHeader([u8; 8]);

impl Push for PacketHeader {
    type Output = AlignedPacketHeader;
    #[inline]
    fn push(&self, dst: &mut [u8], _rest: &[u8]) {
        dst.copy_from_slice(&self.0);
    }
}

/// A `FileDataDefinition` table inside a verified buffer.
#[derive(Clone, Copy)]
pub(crate) struct FileDataDefinition<'a> {
    table: Table<'a>,
}

impl FileDataDefinition<'_> {
    const VT_BYTE_OFFSET: VOffsetT = 4;
    const VT_PACKET_INFO: VOffsetT = 6;
    const VT_NUM_ELEMENTS: VOffsetT = 8;
    const VT_TIMESTAMP_START: VOffsetT = 10;
    const VT_TIMESTAMP_END: VOffsetT = 12;

    /// The entry, with absent fields at their schema defaults (0).
    pub(crate) fn entry(&self) -> TableEntry {
        let header = self.table.get::<PacketHeader>(Self::VT_PACKET_INFO, None);
        TableEntry {
            byte_offset: self
                .table
                .get::<i64>(Self::VT_BYTE_OFFSET, Some(0))
                .unwrap_or(0),
            stream_id: header.map_or(0, PacketHeader::stream_id),
            size: header.map_or(0, PacketHeader::size),
            num_elements: self
                .table
                .get::<i64>(Self::VT_NUM_ELEMENTS, Some(0))
                .unwrap_or(0),
            timestamp_start: self
                .table
                .get::<i64>(Self::VT_TIMESTAMP_START, Some(0))
                .unwrap_or(0),
            timestamp_end: self
                .table
                .get::<i64>(Self::VT_TIMESTAMP_END, Some(0))
                .unwrap_or(0),
        }
    }
}

impl<'a> Follow<'a> for FileDataDefinition<'a> {
    type Inner = FileDataDefinition<'a>;
    #[inline]
    fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
        Self {
            table: Table { buf, loc },
        }
    }
}

impl Verifiable for FileDataDefinition<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<i64>("ByteOffset", Self::VT_BYTE_OFFSET, false)?
            .visit_field::<PacketHeader>("PacketInfo", Self::VT_PACKET_INFO, false)?
            .visit_field::<i64>("NumElements", Self::VT_NUM_ELEMENTS, false)?
            .visit_field::<i64>("TimestampStart", Self::VT_TIMESTAMP_START, false)?
            .visit_field::<i64>("TimestampEnd", Self::VT_TIMESTAMP_END, false)?
            .finish();
        Ok(())
    }
}

type Definitions<'a> = Vector<'a, ForwardsUOffset<FileDataDefinition<'a>>>;

/// The root `FileDataTable` of a verified buffer.
#[derive(Clone, Copy)]
pub(crate) struct FileDataTable<'a> {
    table: Table<'a>,
}

impl<'a> FileDataTable<'a> {
    const VT_TABLE: VOffsetT = 4;

    /// The table's entries, in file order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = TableEntry> + 'a {
        self.table
            .get::<ForwardsUOffset<Definitions<'a>>>(Self::VT_TABLE, None)
            .into_iter()
            .flat_map(|definitions| definitions.iter().map(|d| d.entry()))
    }

    /// How many entries the table has.
    pub(crate) fn len(&self) -> usize {
        self.table
            .get::<ForwardsUOffset<Definitions<'a>>>(Self::VT_TABLE, None)
            .map_or(0, |definitions| definitions.len())
    }
}

impl<'a> Follow<'a> for FileDataTable<'a> {
    type Inner = FileDataTable<'a>;
    #[inline]
    fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
        Self {
            table: Table { buf, loc },
        }
    }
}

impl Verifiable for FileDataTable<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<ForwardsUOffset<Definitions<'_>>>("Table", Self::VT_TABLE, false)?
            .finish();
        Ok(())
    }
}

/// Verifies a size-prefixed FileDataTable buffer and returns its root.
pub(crate) fn verified_root<'a>(
    options: &VerifierOptions,
    buffer: &'a [u8],
) -> Result<FileDataTable<'a>, InvalidFlatbuffer> {
    flatbuffers::size_prefixed_root_with_opts::<FileDataTable<'a>>(options, buffer)
}

/// Builds a size-prefixed FileDataTable buffer listing `entries`.
pub(crate) fn build(entries: &[TableEntry]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    // DV's reader expects every field present, including zeros.
    fbb.force_defaults(true);
    let definitions: Vec<WIPOffset<FileDataDefinition>> = entries
        .iter()
        .map(|entry| {
            let start = fbb.start_table();
            fbb.push_slot_always(FileDataDefinition::VT_BYTE_OFFSET, entry.byte_offset);
            fbb.push_slot_always(FileDataDefinition::VT_NUM_ELEMENTS, entry.num_elements);
            fbb.push_slot_always(
                FileDataDefinition::VT_TIMESTAMP_START,
                entry.timestamp_start,
            );
            fbb.push_slot_always(FileDataDefinition::VT_TIMESTAMP_END, entry.timestamp_end);
            fbb.push_slot_always(
                FileDataDefinition::VT_PACKET_INFO,
                PacketHeader::new(entry.stream_id, entry.size),
            );
            WIPOffset::new(fbb.end_table(start).value())
        })
        .collect();
    let vector = fbb.create_vector(&definitions);
    let start = fbb.start_table();
    fbb.push_slot_always(FileDataTable::VT_TABLE, vector);
    let root: WIPOffset<FileDataTable> = WIPOffset::new(fbb.end_table(start).value());
    fbb.finish_size_prefixed(root, Some(IDENTIFIER));
    fbb.finished_data().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_reads_back() {
        let entries: Vec<TableEntry> = (0..5)
            .map(|i| TableEntry {
                byte_offset: 1000 + i * 37,
                stream_id: (i % 2) as i32,
                size: 29 + i as i32,
                num_elements: i * 100,
                timestamp_start: -i,
                timestamp_end: i64::MAX - i,
            })
            .collect();
        let buffer = build(&entries);
        assert_eq!(buffer.get(8..12), Some(IDENTIFIER.as_bytes()));
        let root = verified_root(&VerifierOptions::default(), &buffer);
        let read: Vec<TableEntry> = root.iter().flat_map(|t| t.entries()).collect();
        assert_eq!(read, entries);
        assert_eq!(root.map(|t| t.len()).ok(), Some(5));
    }

    #[test]
    fn garbage_fails_verification() {
        let mut buffer = build(&[TableEntry::default()]);
        let len = buffer.len();
        buffer.truncate(len - 6);
        assert!(verified_root(&VerifierOptions::default(), &buffer).is_err());
        assert!(verified_root(&VerifierOptions::default(), &[0xFF; 3]).is_err());
    }
}
