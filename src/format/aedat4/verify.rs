//! Checked access to DV's size-prefixed flatbuffers: the size prefix, the file identifier,
//! verifier bounds proportional to the buffer, and a guard for a flatbuffers 2.x verifier bug.
//!
//! flatbuffers 2.1.2 (the 2.x line that `aedat`'s generated code needs) dereferences a table's
//! signed vtable offset with `i32::abs`, which overflows for `i32::MIN`. The verifier is inlined
//! into this crate, so with overflow checks (debug and test builds, fuzzing) a hostile buffer
//! would panic instead of failing verification; release builds wrap and reject it. Later
//! flatbuffers releases use `unsigned_abs`. [`guard_vtable_offsets`] rejects such offsets first,
//! at every table the DV schemas let the verifier reach.

use flatbuffers::{InvalidFlatbuffer, VerifierOptions};

/// Bytes of the little-endian u32 size prefix.
const PREFIX: usize = 4;

/// Verifier bounds for a buffer of `len` bytes: generous for real headers and packets, tight
/// enough that verification work stays linear in the buffer size.
pub(crate) fn verifier_options(len: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: 8,
        // Every table costs at least a 4-byte offset plus a 4-byte vtable offset.
        max_tables: len / 8 + 16,
        // Shared vtables are counted once per table, so real buffers stay below 4x.
        max_apparent_size: len.saturating_mul(4).clamp(1 << 16, 1 << 31),
        ignore_missing_null_terminator: false,
    }
}

/// The total length a size-prefixed buffer claims, prefix included, if the prefix is there.
pub(crate) fn size_prefixed_len(buffer: &[u8]) -> Option<usize> {
    read_u32(buffer, 0).map(|n| (n as usize).saturating_add(PREFIX))
}

/// The identifier a size-prefixed buffer carries (bytes 8..12), escaped, for messages.
fn identifier_found(buffer: &[u8]) -> String {
    buffer
        .get(8..12)
        .unwrap_or_default()
        .escape_ascii()
        .to_string()
}

/// What the DV schemas let the verifier reach from the root table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Only the root table (IOHeader, EventPacket, Frame).
    Root,
    /// The root and the tables of the vector in its first field (ImuPacket, TriggerPacket,
    /// FileDataTable).
    RootAndFirstVector,
}

/// Checks a size-prefixed buffer's prefix, identifier and vtable offsets, then verifies it
/// with `root`. Errors are messages for the caller's error kind.
pub(crate) fn verify_buffer<'a, T>(
    buffer: &'a [u8],
    identifier: &str,
    reach: Reach,
    root: impl FnOnce(&VerifierOptions, &'a [u8]) -> Result<T, InvalidFlatbuffer>,
) -> Result<T, String> {
    match size_prefixed_len(buffer) {
        Some(len) if len == buffer.len() => {}
        Some(len) => {
            return Err(format!(
                "size prefix says {len} bytes, the buffer holds {}",
                buffer.len()
            ));
        }
        None => {
            return Err(format!(
                "{} bytes, too short for a size prefix",
                buffer.len()
            ));
        }
    }
    if buffer.get(8..12) != Some(identifier.as_bytes()) {
        return Err(format!(
            "expected identifier \"{identifier}\", found \"{}\"",
            identifier_found(buffer)
        ));
    }
    guard_vtable_offsets(buffer, reach)?;
    root(&verifier_options(buffer.len()), buffer).map_err(|e| e.to_string())
}

fn read_u32(buffer: &[u8], at: usize) -> Option<u32> {
    match buffer.get(at..at.checked_add(4)?) {
        Some(&[a, b, c, d]) => Some(u32::from_le_bytes([a, b, c, d])),
        _ => None,
    }
}

fn read_u16(buffer: &[u8], at: usize) -> Option<u16> {
    match buffer.get(at..at.checked_add(2)?) {
        Some(&[a, b]) => Some(u16::from_le_bytes([a, b])),
        _ => None,
    }
}

/// Rejects a vtable offset of `i32::MIN` at any table the verifier will visit. Anything else
/// malformed is left to the verifier: this walk gives up quietly where it cannot follow.
pub(crate) fn guard_vtable_offsets(buffer: &[u8], reach: Reach) -> Result<(), String> {
    const MIN: u32 = i32::MIN as u32;
    let reject = |table: usize| Err(format!("table at byte {table} has vtable offset -2^31"));
    let Some(root) = read_u32(buffer, PREFIX).and_then(|o| PREFIX.checked_add(o as usize)) else {
        return Ok(());
    };
    let Some(soffset) = read_u32(buffer, root) else {
        return Ok(());
    };
    if soffset == MIN {
        return reject(root);
    }
    if reach == Reach::Root {
        return Ok(());
    }
    // vtable = table - soffset; the first field's slot is at vtable + 4.
    let vtable = i64::try_from(root).unwrap_or(i64::MAX) - i64::from(soffset as i32);
    let Some(field) = usize::try_from(vtable)
        .ok()
        .and_then(|v| read_u16(buffer, v.checked_add(4)?))
        .filter(|&f| f != 0)
    else {
        return Ok(());
    };
    let Some(vector) = root
        .checked_add(usize::from(field))
        .and_then(|at| at.checked_add(read_u32(buffer, at)? as usize))
    else {
        return Ok(());
    };
    let Some(len) = read_u32(buffer, vector) else {
        return Ok(());
    };
    for i in 0..len as usize {
        let Some(element) = i
            .checked_mul(4)
            .and_then(|o| vector.checked_add(4)?.checked_add(o))
        else {
            return Ok(());
        };
        let Some(table) = read_u32(buffer, element).and_then(|o| element.checked_add(o as usize))
        else {
            // Past the end: the verifier rejects the vector before reaching further tables.
            return Ok(());
        };
        if read_u32(buffer, table) == Some(MIN) {
            return reject(table);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A size-prefixed buffer: root table at 12 whose vtable (at 20) has a first field
    /// pointing at a vector of two tables.
    fn buffer_with_vector(element_soffset: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_le_bytes()); // size prefix
        b.extend_from_slice(&8u32.to_le_bytes()); // root at 4 + 8 = 12
        b.extend_from_slice(b"IMUS"); // identifier at 8
        b.extend_from_slice(&(-8i32).to_le_bytes()); // 12: root soffset, vtable at 20
        b.extend_from_slice(&12u32.to_le_bytes()); // 16: field 0 -> vector at 28
        b.extend_from_slice(&[6, 0, 8, 0, 4, 0]); // 20: vtable (len 6, table 8, field at +4)
        b.extend_from_slice(&[0, 0]); // 26: padding
        b.extend_from_slice(&1u32.to_le_bytes()); // 28: vector of 1
        b.extend_from_slice(&4u32.to_le_bytes()); // 32: element -> table at 36
        b.extend_from_slice(&element_soffset.to_le_bytes()); // 36: element soffset
        b
    }

    #[test]
    fn rejects_min_offsets_where_the_verifier_goes() {
        assert_eq!(
            guard_vtable_offsets(&buffer_with_vector(4), Reach::RootAndFirstVector),
            Ok(())
        );
        assert!(
            guard_vtable_offsets(&buffer_with_vector(i32::MIN), Reach::RootAndFirstVector).is_err()
        );
        // Events are structs, not tables: the same bytes inside them are data.
        assert_eq!(
            guard_vtable_offsets(&buffer_with_vector(i32::MIN), Reach::Root),
            Ok(())
        );
        let mut root_min = buffer_with_vector(4);
        root_min[12..16].copy_from_slice(&i32::MIN.to_le_bytes());
        assert!(guard_vtable_offsets(&root_min, Reach::Root).is_err());
        // Garbage never panics.
        for len in 0..root_min.len() {
            let _ = guard_vtable_offsets(&root_min[..len], Reach::RootAndFirstVector);
        }
        let _ = guard_vtable_offsets(&[0xFF; 64], Reach::RootAndFirstVector);
    }

    #[test]
    fn checks_prefix_and_identifier_first() {
        let ok = |_: &VerifierOptions, _: &[u8]| Ok(());
        let buffer = buffer_with_vector(4);
        assert_eq!(
            verify_buffer(&buffer, "IMUS", Reach::RootAndFirstVector, ok),
            Ok(())
        );
        assert!(
            matches!(verify_buffer(&buffer, "TRIG", Reach::Root, ok), Err(m) if m.contains("identifier"))
        );
        assert!(
            matches!(verify_buffer(&buffer[..30], "IMUS", Reach::Root, ok), Err(m) if m.contains("size prefix"))
        );
        assert!(
            matches!(verify_buffer(&buffer[..3], "IMUS", Reach::Root, ok), Err(m) if m.contains("too short"))
        );
    }
}
