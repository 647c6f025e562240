//! Command-line options that choose and tune a decoder, shared by every command that reads
//! event files.

use inflor::format::{Aedat2Layout, DecodeOptions, Format, JaerOrientation};

/// How to read event files.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    /// Force the input format instead of detecting it.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Count and skip bad records instead of stopping at the first.
    #[arg(long)]
    pub lenient: bool,
    /// Sensor resolution WIDTHxHEIGHT, overriding the header or the format's default.
    #[arg(long, value_parser = parse_resolution)]
    pub resolution: Option<(u16, u16)>,
    /// AEDAT 2.0 address layout, overriding the header's chip class.
    #[arg(long, value_enum)]
    pub aedat2_layout: Option<Aedat2Layout>,
    /// How AEDAT 2.0 addresses map to pixels, for the DVS128 and the DAVIS layouts alike:
    /// `spikingjelly` shows them upright (DVS128: SpikingJelly's CIFAR10-DVS convention;
    /// DAVIS: rotated 180 degrees, as jAER shows it), `raw` keeps the address bits.
    #[arg(long, value_enum, default_value_t = JaerOrientation::Spikingjelly)]
    pub orientation: JaerOrientation,
    /// Largest record, packet or decompressed buffer accepted, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_record_mib: u32,
}

impl DecodeArgs {
    /// The decoder options these arguments describe.
    pub fn options(&self) -> DecodeOptions {
        DecodeOptions {
            max_record_bytes: (self.max_record_mib as usize) << 20,
            lenient: self.lenient,
            resolution: self.resolution,
            aedat2_layout: self.aedat2_layout,
            jaer_orientation: self.orientation,
            ..DecodeOptions::default()
        }
    }
}

/// Parses `WIDTHxHEIGHT`, both at least 1.
pub fn parse_resolution(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, found {s:?}"))?;
    let parse = |v: &str, what: &str| -> Result<u16, String> {
        match v.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{what} must be an integer 1..=65535, found {v:?}")),
            Ok(n) => Ok(n),
        }
    };
    Ok((parse(w, "width")?, parse(h, "height")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_parse_and_reject_clearly() {
        assert_eq!(parse_resolution("128x128"), Ok((128, 128)));
        assert_eq!(parse_resolution("346X260"), Ok((346, 260)));
        assert!(parse_resolution("0x5").unwrap_err().contains("width"));
        assert!(parse_resolution("12").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_resolution("12x-1").unwrap_err().contains("height"));
    }
}
