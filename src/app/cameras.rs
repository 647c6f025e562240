//! `inflor cameras`: lists the connected USB event cameras (model, serial, geometry, link
//! speed), one per line or as JSON lines.

use std::io::Write;

use anyhow::Context;
use inflor::source::usb::{self, UsbError};

/// Arguments of `inflor cameras`.
#[derive(Debug, clap::Args)]
pub struct CamerasArgs {
    /// One JSON object per camera per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Lists the cameras; none found is not an error (exit 0), USB being unusable is.
pub fn run(args: CamerasArgs) -> anyhow::Result<()> {
    let (cameras, note) = match usb::list() {
        Ok(c) => (c, None),
        // No USB devices at all means no camera either: the answer, not a failure.
        Err(e @ UsbError::NoUsb) => (Vec::new(), Some(e.to_string())),
        Err(e) => return Err(e).context("listing the USB cameras"),
    };
    let mut out = std::io::stdout().lock();
    if cameras.is_empty() {
        let mut message = format!("no event camera found (looked for {})", usb::LOOKED_FOR);
        if let Some(note) = note {
            message.push_str(&format!("; {note}"));
        }
        // JSON output stays parseable (empty); the message goes to stderr there.
        if args.json {
            eprintln!("{message}");
        } else {
            writeln!(out, "{message}")?;
        }
        return Ok(());
    }
    for c in &cameras {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(c)?)?;
        } else {
            let serial = match (&c.serial, &c.serial_error) {
                (Some(s), _) => s.clone(),
                (None, Some(e)) => format!("? ({e})"),
                (None, None) => "?".to_owned(),
            };
            writeln!(
                out,
                "{}\tserial {serial}\t{}x{}\t{}\tbus {} address {}",
                c.name, c.width, c.height, c.speed, c.bus, c.address
            )?;
        }
    }
    Ok(())
}
