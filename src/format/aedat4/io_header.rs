//! The DV IOHeader: a verified `IOHE` flatbuffer holding the compression, the data-table
//! position and the infoNode XML that declares the streams (id, type identifier, sensor size,
//! source). Shared by AEDAT 4.0 files and the DV network stream, for reading and writing.

use aedat::base::ioheader_generated::{Compression as FbCompression, Ioheader, IoheaderArgs};
use flatbuffers::FlatBufferBuilder;

use super::compression::Compression;
use super::verify::{Reach, verify_buffer};
use crate::event::StreamInfo;

/// The IOHeader's file identifier.
const IDENTIFIER: &str = "IOHE";

/// What a stream carries, from its `typeIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// `EVTS`: polarity events.
    Events,
    /// `FRME`: frames (one per packet).
    Frames,
    /// `IMUS`: IMU samples.
    Imu,
    /// `TRIG`: triggers.
    Triggers,
    /// Any other DV type (bounding boxes, poses...), which inflor does not read.
    Other(String),
}

impl StreamKind {
    fn from_identifier(identifier: &str) -> Self {
        match identifier {
            "EVTS" => StreamKind::Events,
            "FRME" => StreamKind::Frames,
            "IMUS" => StreamKind::Imu,
            "TRIG" => StreamKind::Triggers,
            other => StreamKind::Other(other.to_string()),
        }
    }

    /// The flatbuffer file identifier of this stream's packets.
    pub(crate) fn identifier(&self) -> &str {
        match self {
            StreamKind::Events => "EVTS",
            StreamKind::Frames => "FRME",
            StreamKind::Imu => "IMUS",
            StreamKind::Triggers => "TRIG",
            StreamKind::Other(other) => other,
        }
    }
}

/// One stream the infoNode declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamDecl {
    /// The id packets carry.
    pub id: i32,
    /// What it carries.
    pub kind: StreamKind,
    /// `sizeX`, `sizeY` of its `info` node, if present.
    pub size: Option<(u16, u16)>,
    /// `source` of its `info` node, if present.
    pub source: Option<String>,
}

/// A verified IOHeader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IoHeader {
    /// How every packet body is compressed.
    pub compression: Compression,
    /// Absolute offset of the FileDataTable, or -1 when there is none.
    pub data_table_position: i64,
    /// The declared streams, sorted by id.
    pub streams: Vec<StreamDecl>,
}

/// Verifies a size-prefixed IOHeader buffer (`[u32 length][flatbuffer]`) and parses its
/// infoNode. Errors are messages for `DecodeErrorKind::BadHeader`.
pub(crate) fn parse(buffer: &[u8]) -> Result<IoHeader, String> {
    let header = verify_buffer(buffer, IDENTIFIER, Reach::Root, |options, b| {
        flatbuffers::size_prefixed_root_with_opts::<Ioheader>(options, b)
    })
    .map_err(|e| format!("invalid IOHeader: {e}"))?;
    let code = header.compression().0;
    let compression = Compression::from_code(code).ok_or_else(|| {
        format!("compression {code}, expected 0 to 4 (NONE, LZ4, LZ4_HIGH, ZSTD, ZSTD_HIGH)")
    })?;
    let data_table_position = header.file_data_position();
    if data_table_position < -1 {
        return Err(format!(
            "dataTablePosition {data_table_position}, expected -1 or a file offset"
        ));
    }
    let description = header
        .description()
        .ok_or_else(|| "the IOHeader has no infoNode".to_string())?;
    let streams = parse_info_node(description)?;
    Ok(IoHeader {
        compression,
        data_table_position,
        streams,
    })
}

/// Parses the infoNode XML: `<dv><node name="outInfo"><node name="ID">` with
/// `typeIdentifier` and an `info` node holding `sizeX`, `sizeY`, `source`.
fn parse_info_node(xml: &str) -> Result<Vec<StreamDecl>, String> {
    // The default options reject DTDs, so entity expansion cannot amplify the input.
    let document =
        roxmltree::Document::parse(xml).map_err(|e| format!("infoNode is not valid XML: {e}"))?;
    let root = document.root_element();
    if !root.has_tag_name("dv") {
        return Err(format!(
            "infoNode root element <{}>, expected <dv>",
            root.tag_name().name()
        ));
    }
    let out_info = child_node(root, "outInfo")
        .ok_or_else(|| "infoNode has no <node name=\"outInfo\">".to_string())?;
    let mut streams = Vec::new();
    for node in out_info
        .children()
        .filter(|n| n.is_element() && n.has_tag_name("node"))
    {
        let name = node.attribute("name").unwrap_or_default();
        let id: i32 = name
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("stream node name {name:?}, expected a stream id"))?;
        let identifier = attr(node, "typeIdentifier")
            .ok_or_else(|| format!("stream {id} has no typeIdentifier"))?;
        let info = child_node(node, "info");
        let size_x = info.and_then(|i| attr(i, "sizeX"));
        let size_y = info.and_then(|i| attr(i, "sizeY"));
        let size = match (size_x, size_y) {
            (Some(x), Some(y)) => Some((parse_size(id, "sizeX", x)?, parse_size(id, "sizeY", y)?)),
            _ => None,
        };
        streams.push(StreamDecl {
            id,
            kind: StreamKind::from_identifier(identifier.trim()),
            size,
            source: info
                .and_then(|i| attr(i, "source"))
                .map(|s| s.trim().to_string()),
        });
    }
    if streams.is_empty() {
        return Err("infoNode declares no streams".to_string());
    }
    streams.sort_by_key(|s| s.id);
    if let Some(pair) = streams
        .windows(2)
        .find(|w| w.first().map(|s| s.id) == w.get(1).map(|s| s.id))
    {
        let id = pair.first().map_or(0, |s| s.id);
        return Err(format!("infoNode declares stream {id} twice"));
    }
    Ok(streams)
}

fn child_node<'a, 'input>(
    parent: roxmltree::Node<'a, 'input>,
    name: &str,
) -> Option<roxmltree::Node<'a, 'input>> {
    parent
        .children()
        .find(|n| n.is_element() && n.has_tag_name("node") && n.attribute("name") == Some(name))
}

fn attr<'a>(node: roxmltree::Node<'a, '_>, key: &str) -> Option<&'a str> {
    node.children()
        .find(|n| n.is_element() && n.has_tag_name("attr") && n.attribute("key") == Some(key))
        .map(|n| n.text().unwrap_or_default())
}

fn parse_size(id: i32, key: &str, text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("stream {id} {key} {text:?}, expected 1 to 65535"))
}

/// Escapes text for an XML element body.
fn escape_xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The infoNode for one `EVTS` stream with id 0, laid out as dv-processing writes it (its
/// file writer adds a `typeDescription`, its network writer does not).
pub(crate) fn event_stream_info_node(
    info: &StreamInfo,
    compression: Compression,
    type_description: Option<&str>,
) -> String {
    let source = escape_xml(info.source.as_deref().unwrap_or("inflor"));
    let description = type_description.map_or(String::new(), |d| {
        format!(
            "            <attr key=\"typeDescription\" type=\"string\">{}</attr>\n",
            escape_xml(d)
        )
    });
    format!(
        "<dv version=\"2.0\">\n\
         \x20   <node name=\"outInfo\" path=\"/outInfo/\">\n\
         \x20       <node name=\"0\" path=\"/outInfo/0/\">\n\
         \x20           <attr key=\"compression\" type=\"string\">{compression}</attr>\n\
         \x20           <attr key=\"originalModuleName\" type=\"string\">inflor</attr>\n\
         \x20           <attr key=\"originalOutputName\" type=\"string\">events</attr>\n\
         {description}\
         \x20           <attr key=\"typeIdentifier\" type=\"string\">EVTS</attr>\n\
         \x20           <node name=\"info\" path=\"/outInfo/0/info/\">\n\
         \x20               <attr key=\"sizeX\" type=\"int\">{width}</attr>\n\
         \x20               <attr key=\"sizeY\" type=\"int\">{height}</attr>\n\
         \x20               <attr key=\"source\" type=\"string\">{source}</attr>\n\
         \x20           </node>\n\
         \x20       </node>\n\
         \x20   </node>\n\
         </dv>\n",
        compression = compression.name(),
        width = info.width,
        height = info.height,
    )
}

/// Builds a size-prefixed IOHeader buffer (`[u32 length][flatbuffer]`). Every field is
/// written even at its default, as DV does, so the length does not depend on
/// `data_table_position` and a header can be patched in place once the table is written.
pub(crate) fn build(
    compression: Compression,
    data_table_position: i64,
    info_node: &str,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    fbb.force_defaults(true);
    let description = fbb.create_string(info_node);
    let root = Ioheader::create(
        &mut fbb,
        &IoheaderArgs {
            compression: FbCompression(compression.code()),
            file_data_position: data_table_position,
            description: Some(description),
        },
    );
    fbb.finish_size_prefixed(root, Some(IDENTIFIER));
    fbb.finished_data().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> StreamInfo {
        StreamInfo {
            source: Some("DAVIS<&>\"'".to_string()),
            ..StreamInfo::new(346, 260, "AEDAT 4.0")
        }
    }

    #[test]
    fn builds_and_parses_back() {
        let xml = event_stream_info_node(&info(), Compression::Zstd, Some("d"));
        let buffer = build(Compression::Zstd, 1234, &xml);
        let header = parse(&buffer);
        assert_eq!(
            header,
            Ok(IoHeader {
                compression: Compression::Zstd,
                data_table_position: 1234,
                streams: vec![StreamDecl {
                    id: 0,
                    kind: StreamKind::Events,
                    size: Some((346, 260)),
                    source: Some("DAVIS<&>\"'".to_string()),
                }],
            })
        );
        // Same length whatever the table position: the header can be patched in place.
        assert_eq!(build(Compression::Zstd, -1, &xml).len(), buffer.len());
    }

    #[test]
    fn rejects_bad_info_nodes() {
        let cases = [
            ("<x/>", "root element"),
            ("<dv></dv>", "outInfo"),
            ("<dv><node name=\"outInfo\"></node></dv>", "no streams"),
            (
                "<dv><node name=\"outInfo\"><node name=\"a\"/></node></dv>",
                "stream id",
            ),
            (
                "<dv><node name=\"outInfo\"><node name=\"1\"/></node></dv>",
                "typeIdentifier",
            ),
            (
                "<dv><node name=\"outInfo\"><node name=\"1\"><attr key=\"typeIdentifier\">EVTS</attr></node>\
                 <node name=\"1\"><attr key=\"typeIdentifier\">IMUS</attr></node></node></dv>",
                "twice",
            ),
            (
                "<dv><node name=\"outInfo\"><node name=\"1\"><attr key=\"typeIdentifier\">EVTS</attr>\
                 <node name=\"info\"><attr key=\"sizeX\">0</attr><attr key=\"sizeY\">5</attr></node></node></node></dv>",
                "sizeX",
            ),
            ("<!DOCTYPE dv [<!ENTITY a \"b\">]><dv/>", "XML"),
        ];
        for (xml, needle) in cases {
            let result = parse(&build(Compression::None, -1, xml));
            assert!(
                matches!(&result, Err(m) if m.contains(needle)),
                "{xml}: {result:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_buffers() {
        let good = build(
            Compression::Lz4,
            -1,
            &event_stream_info_node(&info(), Compression::Lz4, None),
        );
        let mut wrong_id = good.clone();
        if let Some(b) = wrong_id.get_mut(8) {
            *b = b'X';
        }
        assert!(matches!(parse(&wrong_id), Err(m) if m.contains("identifier")));
        assert!(parse(&good[..good.len() / 2]).is_err());
        assert!(parse(&[]).is_err());
        let mut fbb = FlatBufferBuilder::new();
        let description = fbb.create_string("<dv/>");
        let root = Ioheader::create(
            &mut fbb,
            &IoheaderArgs {
                compression: FbCompression(9),
                file_data_position: -1,
                description: Some(description),
            },
        );
        fbb.finish_size_prefixed(root, Some(IDENTIFIER));
        let result = parse(fbb.finished_data());
        assert!(
            matches!(&result, Err(m) if m.contains("compression 9")),
            "{result:?}"
        );
    }
}
