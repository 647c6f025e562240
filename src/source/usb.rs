//! USB event cameras (Prophesee EVK4 and EVK3 HD, iniVation DVXplorer and DAVIS346) through the
//! `neuromorphic-drivers` crate: listing the connected ones, opening one by serial (or the
//! first), and reading it on a dedicated thread into a [`StreamWriter`].
//!
//! The driver is blocking (libusb transfers land in a ring that a call waits on), so each
//! camera gets its own OS thread: it waits for buffers, turns the driver's polarity events into
//! [`Event`]s in batches, and drives the writer through the runtime's handle. Nothing of this
//! runs on the async runtime's workers. Only USB devices are looked for; the crate's Ethernet
//! camera (Lucid Triton) would need network discovery, which a daemon beside USB cameras does
//! not want at start.

use std::sync::Arc;
use std::time::Duration;

use neuromorphic_drivers as nd;
use neuromorphic_drivers::UsbDevice as _;
use neuromorphic_drivers::rusb::{self, UsbContext as _};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::SourceError;
use crate::event::Event;
use crate::pipeline::StreamWriter;
use crate::telemetry as t;

/// The cameras looked for, in words (for messages).
pub const LOOKED_FOR: &str = "Prophesee EVK3/EVK4, iniVation DVXplorer/DAVIS346 over USB";

/// How long the reader waits for a buffer before it looks at the cancel token and the
/// driver's error flag again.
const POLL: Duration = Duration::from_millis(100);

/// A camera model this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraKind {
    /// Prophesee EVK4 (IMX636), 1280×720.
    PropheseeEvk4,
    /// Prophesee EVK3 HD, 1280×720.
    PropheseeEvk3Hd,
    /// iniVation DVXplorer, 640×480.
    InivationDvxplorer,
    /// iniVation DAVIS346, 346×260.
    InivationDavis346,
}

impl CameraKind {
    /// Every kind looked for.
    pub const ALL: [CameraKind; 4] = [
        CameraKind::PropheseeEvk4,
        CameraKind::PropheseeEvk3Hd,
        CameraKind::InivationDvxplorer,
        CameraKind::InivationDavis346,
    ];

    /// The driver's name for it, e.g. "Prophesee EVK4".
    pub fn name(self) -> &'static str {
        self.driver_type().name()
    }

    /// The sensor's width and height in pixels.
    pub fn geometry(self) -> (u16, u16) {
        match self {
            Self::PropheseeEvk4 => (
                nd::prophesee_evk4::PROPERTIES.width,
                nd::prophesee_evk4::PROPERTIES.height,
            ),
            Self::PropheseeEvk3Hd => (
                nd::prophesee_evk3_hd::PROPERTIES.width,
                nd::prophesee_evk3_hd::PROPERTIES.height,
            ),
            Self::InivationDvxplorer => (
                nd::inivation_dvxplorer::PROPERTIES.width,
                nd::inivation_dvxplorer::PROPERTIES.height,
            ),
            Self::InivationDavis346 => (
                nd::inivation_davis346::PROPERTIES.width,
                nd::inivation_davis346::PROPERTIES.height,
            ),
        }
    }

    fn driver_type(self) -> nd::Type {
        match self {
            Self::PropheseeEvk4 => nd::Type::PropheseeEvk4,
            Self::PropheseeEvk3Hd => nd::Type::PropheseeEvk3Hd,
            Self::InivationDvxplorer => nd::Type::InivationDvxplorer,
            Self::InivationDavis346 => nd::Type::InivationDavis346,
        }
    }

    fn list(
        self,
        devices: &rusb::DeviceList<rusb::Context>,
    ) -> rusb::Result<Vec<nd::device::ListedDevice>> {
        match self {
            Self::PropheseeEvk4 => nd::prophesee_evk4::Device::list_devices(devices),
            Self::PropheseeEvk3Hd => nd::prophesee_evk3_hd::Device::list_devices(devices),
            Self::InivationDvxplorer => nd::inivation_dvxplorer::Device::list_devices(devices),
            Self::InivationDavis346 => nd::inivation_davis346::Device::list_devices(devices),
        }
    }
}

/// A connected camera, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraInfo {
    /// Its model.
    pub kind: CameraKind,
    /// The model's name in words.
    pub name: &'static str,
    /// Its serial number (`None` when it could not be read, e.g. another program has it open).
    pub serial: Option<String>,
    /// Why the serial could not be read.
    pub serial_error: Option<String>,
    /// The USB bus it is on.
    pub bus: u8,
    /// Its address on that bus.
    pub address: u8,
    /// The link speed, in words (e.g. "USB 3.0 SuperSpeed (5 Gb/s)").
    pub speed: String,
    /// Sensor width in pixels.
    pub width: u16,
    /// Sensor height in pixels.
    pub height: u16,
}

/// Why the cameras could not be listed, opened or read.
#[derive(Debug, thiserror::Error)]
pub enum UsbError {
    /// This system exposes no USB devices at all (no `/dev/bus/usb`): inside a container the
    /// devices were not passed through, or the machine has no USB bus.
    #[error(
        "this system exposes no USB devices (no /dev/bus/usb; in a container, pass the \
         camera's device through)"
    )]
    NoUsb,
    /// libusb could not start.
    #[error("USB is unavailable: libusb could not start ({0})")]
    Context(#[source] rusb::Error),
    /// A camera was found but may not be opened by this user.
    #[error(
        "no permission to open the USB camera on bus {bus} address {address}: install the \
         udev rules (see the README, \"USB cameras\") or run as a user allowed to use it"
    )]
    Permission {
        /// The bus.
        bus: u8,
        /// The address.
        address: u8,
    },
    /// Enumerating the USB devices failed.
    #[error("cannot list the USB devices: {0}")]
    List(#[source] rusb::Error),
    /// No camera (with the asked serial) is connected.
    #[error("stream {stream}: no event camera{which} found (looked for {LOOKED_FOR}){note}")]
    NotFound {
        /// The stream id.
        stream: String,
        /// " with serial \"X\"", or empty for the first camera.
        which: String,
        /// Why none could be seen, when known.
        note: String,
    },
    /// The driver could not open or configure the camera.
    #[error("stream {stream}: cannot open the {name} with serial {serial:?}: {source}")]
    Open {
        /// The stream id.
        stream: String,
        /// The camera's model name.
        name: &'static str,
        /// Its serial.
        serial: String,
        /// The driver's error (boxed: it is large).
        source: Box<nd::Error>,
    },
    /// The camera was unplugged while streaming.
    #[error("stream {stream}: the {name} with serial {serial:?} was unplugged")]
    Unplugged {
        /// The stream id.
        stream: String,
        /// The camera's model name.
        name: &'static str,
        /// Its serial.
        serial: String,
    },
    /// The camera failed while streaming.
    #[error("stream {stream}: the {name} with serial {serial:?} failed: {source}")]
    Device {
        /// The stream id.
        stream: String,
        /// The camera's model name.
        name: &'static str,
        /// Its serial.
        serial: String,
        /// The driver's error (boxed: it is large).
        source: Box<nd::Error>,
    },
    /// The reader thread could not be started or ended without a report.
    #[error("stream {stream}: the camera reader thread {what}")]
    Thread {
        /// The stream id.
        stream: String,
        /// What happened.
        what: String,
    },
}

impl UsbError {
    /// The metric label of an error that ended a stream.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unplugged { .. } => "unplugged",
            _ => "device",
        }
    }
}

fn context() -> Result<rusb::Context, UsbError> {
    rusb::Context::new().map_err(|e| {
        if cfg!(target_os = "linux") && !std::path::Path::new("/dev/bus/usb").exists() {
            UsbError::NoUsb
        } else {
            UsbError::Context(e)
        }
    })
}

/// Lists the connected cameras of every kind in [`CameraKind::ALL`]. [`UsbError::NoUsb`] when
/// the system has no USB devices at all (so no camera either).
pub fn list() -> Result<Vec<CameraInfo>, UsbError> {
    let context = context()?;
    let devices = context.devices().map_err(UsbError::List)?;
    let mut cameras = Vec::new();
    for kind in CameraKind::ALL {
        let listed = kind.list(&devices).map_err(|e| match e {
            rusb::Error::Access => permission(&devices, kind),
            e => UsbError::List(e),
        })?;
        let (width, height) = kind.geometry();
        for d in listed {
            let (bus, address) = match d.location {
                nd::Location::BusNumberAndAddress {
                    bus_number,
                    address,
                } => (bus_number, address),
                nd::Location::Address(_) => continue,
            };
            let (serial, serial_error) = match d.serial {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e.to_string())),
            };
            cameras.push(CameraInfo {
                kind,
                name: kind.name(),
                serial,
                serial_error,
                bus,
                address,
                speed: d.connection.to_string(),
                width,
                height,
            });
        }
    }
    Ok(cameras)
}

/// The permission error naming the first device of `kind` (the one the driver could not open).
fn permission(devices: &rusb::DeviceList<rusb::Context>, kind: CameraKind) -> UsbError {
    let ids: &[(u16, u16)] = match kind {
        CameraKind::PropheseeEvk4 => nd::prophesee_evk4::Device::VENDOR_AND_PRODUCT_IDS,
        CameraKind::PropheseeEvk3Hd => nd::prophesee_evk3_hd::Device::VENDOR_AND_PRODUCT_IDS,
        CameraKind::InivationDvxplorer => nd::inivation_dvxplorer::Device::VENDOR_AND_PRODUCT_IDS,
        CameraKind::InivationDavis346 => nd::inivation_davis346::Device::VENDOR_AND_PRODUCT_IDS,
    };
    let found = devices.iter().find(|d| {
        d.device_descriptor()
            .is_ok_and(|dd| ids.contains(&(dd.vendor_id(), dd.product_id())))
    });
    UsbError::Permission {
        bus: found.as_ref().map_or(0, |d| d.bus_number()),
        address: found.as_ref().map_or(0, |d| d.address()),
    }
}

/// An opened camera, ready to stream.
pub struct Camera {
    info: CameraInfo,
    serial: String,
    device: nd::Device,
    flag: nd::Flag<nd::Error, nd::UsbOverflow>,
    /// The libusb event thread the device's transfers complete on; it must outlive the device.
    _event_loop: Arc<nd::UsbEventLoop>,
}

impl std::fmt::Debug for Camera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Camera").field("info", &self.info).finish()
    }
}

impl Camera {
    /// Opens the camera with `serial` (the first one found when `None`) for stream `stream`,
    /// with the driver's default configuration (biases, ring) for its model.
    pub fn open(stream: &str, serial: Option<&str>) -> Result<Camera, UsbError> {
        let which = match serial {
            Some(s) => format!(" with serial {s:?}"),
            None => String::new(),
        };
        let cameras = match list() {
            Ok(c) => c,
            Err(UsbError::NoUsb) => {
                return Err(UsbError::NotFound {
                    stream: stream.to_owned(),
                    which,
                    note: format!("; {}", UsbError::NoUsb),
                });
            }
            Err(e) => return Err(e),
        };
        let found = cameras.iter().find(|c| match serial {
            Some(s) => c.serial.as_deref() == Some(s),
            None => c.serial.is_some(),
        });
        let Some(info) = found.cloned() else {
            let busy: Vec<String> = cameras
                .iter()
                .filter_map(|c| c.serial_error.as_ref().map(|e| format!("{} ({e})", c.name)))
                .collect();
            let mut note = String::new();
            if !cameras.is_empty() {
                let seen: Vec<String> = cameras
                    .iter()
                    .filter_map(|c| c.serial.as_ref().map(|s| format!("{} {s}", c.name)))
                    .collect();
                if !seen.is_empty() {
                    note = format!("; connected: {}", seen.join(", "));
                }
            }
            if !busy.is_empty() {
                note.push_str(&format!("; unreadable: {}", busy.join(", ")));
            }
            return Err(UsbError::NotFound {
                stream: stream.to_owned(),
                which,
                note,
            });
        };
        let serial = info.serial.clone().unwrap_or_default();
        let open_error = |source: nd::Error| UsbError::Open {
            stream: stream.to_owned(),
            name: info.name,
            serial: serial.clone(),
            source: Box::new(source),
        };
        let (flag, event_loop) = nd::flag_and_event_loop().map_err(|e| open_error(e.into()))?;
        let listed = nd::devices::ListedDevice {
            device_type: info.kind.driver_type(),
            location: nd::Location::BusNumberAndAddress {
                bus_number: info.bus,
                address: info.address,
            },
            connection: nd::devices::Connection::UsbUnknown,
            serial: Ok(serial.clone()),
        };
        let device = listed
            .open(None, None, Arc::clone(&event_loop), flag.clone())
            .map_err(open_error)?;
        Ok(Camera {
            info,
            serial,
            device,
            flag,
            _event_loop: event_loop,
        })
    }

    /// What the camera is.
    pub fn info(&self) -> &CameraInfo {
        &self.info
    }
}

/// What a camera stream did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CameraReport {
    /// Polarity events delivered.
    pub events: u64,
    /// Raw USB packets the driver dropped because its ring overflowed.
    pub packets_dropped: u64,
}

/// The driver's polarity event as an inflor event (timestamps in µs since the camera started;
/// a timestamp past `i64::MAX` µs, which no camera reaches, saturates).
#[inline]
pub fn map_event(e: nd::types::PolarityEvent<u64, u16, u16>) -> Event {
    let (t, x, y, polarity) = (e.t, e.x, e.y, e.polarity);
    Event::new(
        i64::try_from(t).unwrap_or(i64::MAX),
        x,
        y,
        matches!(polarity, nd::types::Polarity::On),
    )
}

/// Turns a buffer's bytes into events through the camera's adapter, handing out batches of
/// at most `batch` events to `deliver` (which returns false to stop).
fn convert(
    adapter: &mut nd::Adapter,
    bytes: &[u8],
    events: &mut Vec<Event>,
    batch: usize,
    deliver: &mut dyn FnMut(&[Event]) -> bool,
) -> bool {
    let mut ok = true;
    let mut on_event = |e| {
        if !ok {
            return;
        }
        events.push(map_event(e));
        if events.len() >= batch {
            ok = deliver(events);
            events.clear();
        }
    };
    match adapter {
        nd::Adapter::Evt3(a) => a.convert(bytes, &mut on_event, |_| {}),
        nd::Adapter::Dvxplorer(a) => a.convert(bytes, &mut on_event, |_| {}, |_| {}),
        nd::Adapter::Davis346(a) => a.convert(bytes, &mut on_event, |_| {}, |_| {}, |_| {}),
    }
    if ok && !events.is_empty() {
        ok = deliver(events);
    }
    events.clear();
    ok
}

/// Whether a driver error means the camera is gone.
fn unplugged(e: &nd::Error) -> bool {
    use nd::usb::Error as U;
    let usb = match e {
        nd::Error::Usb(u)
        | nd::Error::PropheseeEvk4(nd::prophesee_evk4::Error::Usb(u))
        | nd::Error::PropheseeEvk3Hd(nd::prophesee_evk3_hd::Error::Usb(u))
        | nd::Error::InivationDvxplorer(nd::inivation_dvxplorer::Error::Usb(u))
        | nd::Error::InivationDavis346(nd::inivation_davis346::Error::Usb(u)) => Some(u),
        _ => None,
    };
    matches!(usb, Some(U::Rusb(rusb::Error::NoDevice)))
}

/// Streams `camera` into `writer` on a dedicated thread until `cancel` or a device error, then
/// finishes the stream (the windows binned so far are classified and published). `runtime` is
/// the runtime the writer's waits run on; `batch` bounds the events per push.
///
/// A device error or an unplug ends the stream with [`UsbError::Unplugged`] or
/// [`UsbError::Device`], logged and counted in `inflor_source_errors_total`. Packets the
/// driver's ring dropped are counted in `inflor_camera_packets_dropped_total`, and the next
/// output carries `gap: true`.
pub async fn run(
    camera: Camera,
    writer: StreamWriter,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    batch: usize,
) -> Result<CameraReport, SourceError> {
    let stream = writer.id().to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("inflor-usb-{stream}"))
        .spawn(move || {
            let _ = tx.send(read(camera, writer, &runtime, &cancel, batch.max(1)));
        });
    if let Err(e) = spawned {
        return Err(SourceError::Usb(UsbError::Thread {
            stream,
            what: format!("could not start: {e}"),
        }));
    }
    rx.await.unwrap_or_else(|_| {
        Err(SourceError::Usb(UsbError::Thread {
            stream,
            what: "ended without a report".to_owned(),
        }))
    })
}

/// The reader thread's body.
fn read(
    camera: Camera,
    mut writer: StreamWriter,
    runtime: &tokio::runtime::Handle,
    cancel: &CancellationToken,
    batch: usize,
) -> Result<CameraReport, SourceError> {
    let stream = writer.id().to_owned();
    let labels = [("stream", stream.clone())];
    let packets_dropped = metrics::counter!(t::CAMERA_PACKETS_DROPPED, &labels);
    let mut report = CameraReport::default();
    writer.start((camera.info.width, camera.info.height))?;
    tracing::info!(
        stream = %stream,
        camera = camera.info.name,
        serial = %camera.serial,
        width = camera.info.width,
        height = camera.info.height,
        "camera streaming"
    );
    let mut adapter = camera.device.create_adapter();
    let mut events: Vec<Event> = Vec::with_capacity(batch);
    let mut pipeline_error = None;
    let mut failure = None;
    while !cancel.is_cancelled() {
        if let Err(source) = camera.flag.load_error() {
            failure = Some(source);
            break;
        }
        let Some(buffer) = camera.device.next_with_timeout(&POLL) else {
            continue;
        };
        let dropped = camera.device.dropped_packets();
        if dropped > report.packets_dropped {
            packets_dropped.increment(dropped - report.packets_dropped);
            report.packets_dropped = dropped;
        }
        if buffer.first_after_overflow {
            tracing::warn!(stream = %stream, dropped_packets = dropped, "camera ring overflowed: packets dropped");
            writer.gap();
        }
        let received = buffer.instant;
        // The writer's waits (a full queue under `block`) are async. This thread is no
        // runtime worker, so it blocks on them through the handle, which parks this thread
        // alone; meanwhile the driver's ring absorbs the camera's packets (and counts what it
        // cannot hold, above).
        let mut deliver = |batch: &[Event]| {
            report.events += batch.len() as u64;
            match runtime.block_on(writer.push(batch, received)) {
                Ok(()) => true,
                Err(e) => {
                    pipeline_error = Some(e);
                    false
                }
            }
        };
        let ok = convert(&mut adapter, buffer.slice, &mut events, batch, &mut deliver);
        drop(buffer);
        if !ok {
            break;
        }
    }
    if let Some(e) = pipeline_error {
        return Err(e.into());
    }
    // Whatever happened, the windows binned so far are published.
    let finished = runtime.block_on(writer.finish());
    if let Some(source) = failure {
        let e = if unplugged(&source) {
            UsbError::Unplugged {
                stream: stream.clone(),
                name: camera.info.name,
                serial: camera.serial.clone(),
            }
        } else {
            UsbError::Device {
                stream: stream.clone(),
                name: camera.info.name,
                serial: camera.serial.clone(),
                source: Box::new(source),
            }
        };
        metrics::counter!(t::SOURCE_ERRORS, "stream" => stream.clone(), "kind" => e.kind())
            .increment(1);
        tracing::error!(stream = %stream, error = %e, "camera stream ended");
        return Err(SourceError::Usb(e));
    }
    finished?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// EVT 3.0 words (little-endian u16) as the EVK4 sends them.
    fn words(w: &[u16]) -> Vec<u8> {
        w.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn driver_events_map_to_inflor_events() {
        let on = nd::types::PolarityEvent {
            t: 1_234_567u64,
            x: 1279u16,
            y: 719u16,
            polarity: nd::types::Polarity::On,
        };
        assert_eq!(map_event(on), Event::new(1_234_567, 1279, 719, true));
        let off = nd::types::PolarityEvent {
            t: u64::MAX,
            x: 0u16,
            y: 3u16,
            polarity: nd::types::Polarity::Off,
        };
        assert_eq!(map_event(off), Event::new(i64::MAX, 0, 3, false));
    }

    #[test]
    fn evt3_bytes_become_batched_events_through_the_drivers_adapter() {
        let (w, h) = CameraKind::PropheseeEvk4.geometry();
        assert_eq!((w, h), (1280, 720));
        let mut adapter: nd::Adapter = nd::adapters::evt3::Adapter::from_dimensions(w, h).into();
        let bytes = words(&[
            0x8000,               // time high = 0
            0x6005,               // time low = 5 µs
            10,                   // y = 10
            0x2000 | 0x800 | 20,  // x = 20, ON
            0x2000 | 21,          // x = 21, OFF
            0x6009,               // time low = 9 µs
            0x3000 | 0x800 | 100, // vector base x = 100, ON
            0x4000 | 0b101,       // 12-bit vector: x = 100 and 102
            0x2000 | 2000,        // x beyond the sensor: dropped by the adapter
        ]);
        let mut events = Vec::new();
        let mut batches: Vec<Vec<Event>> = Vec::new();
        let ok = convert(&mut adapter, &bytes, &mut events, 3, &mut |b| {
            batches.push(b.to_vec());
            true
        });
        assert!(ok);
        assert_eq!(
            batches,
            vec![
                vec![
                    Event::new(5, 20, 10, true),
                    Event::new(5, 21, 10, false),
                    Event::new(9, 100, 10, true),
                ],
                vec![Event::new(9, 102, 10, true)],
            ]
        );
        // A refusal stops the delivery of the rest.
        let mut adapter: nd::Adapter = nd::adapters::evt3::Adapter::from_dimensions(w, h).into();
        let mut calls = 0;
        let ok = convert(&mut adapter, &bytes, &mut events, 1, &mut |_| {
            calls += 1;
            false
        });
        assert!(!ok);
        assert_eq!(calls, 1);
    }

    #[test]
    fn geometries_are_the_sensors() {
        let g: Vec<(u16, u16)> = CameraKind::ALL.iter().map(|k| k.geometry()).collect();
        assert_eq!(g, vec![(1280, 720), (1280, 720), (640, 480), (346, 260)]);
    }

    #[test]
    fn unplug_is_told_from_other_device_errors() {
        let gone = nd::Error::Usb(nd::usb::Error::Rusb(rusb::Error::NoDevice));
        assert!(unplugged(&gone));
        let gone = nd::Error::PropheseeEvk4(nd::prophesee_evk4::Error::Usb(nd::usb::Error::Rusb(
            rusb::Error::NoDevice,
        )));
        assert!(unplugged(&gone));
        assert!(!unplugged(&nd::Error::Usb(nd::usb::Error::Rusb(
            rusb::Error::Io
        ))));
        assert!(!unplugged(&nd::Error::NoDevice));
    }
}
