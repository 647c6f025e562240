"""Writes the dv-processing fixtures in this folder (run once with dv-processing 2.0.4).

Every file holds the same streams, written by iniVation's own MonoCameraWriter so that the
decoder is checked against an independent writer, in each of DV's five compressions:
events from the loop below (64x48 sensor), 2 frames, 12 IMU samples, 5 triggers.
`dvp_bbox_lz4.aedat4` adds a bounding-box stream (type BBOX, which inflor does not read).
tests/it/formats_aedat4.rs regenerates the same events and compares every one.
"""
import numpy as np
import dv_processing as dv

W, H = 64, 48
PACKETS, PER_PACKET = 4, 500


def events():
    for k in range(PACKETS):
        store = dv.EventStore()
        for i in range(PER_PACKET):
            n = k * PER_PACKET + i
            store.push_back(1000 + 7 * n, (13 * k + 5 * i) % W, (3 * i + k) % H, (i + k) % 3 == 0)
        yield store


def write(path, compression, bbox=False):
    config = dv.io.MonoCameraWriter.Config("DVP_FIXTURE")
    config.compression = compression
    config.addEventStream((W, H))
    config.addFrameStream((16, 12))
    config.addImuStream()
    config.addTriggerStream()
    if bbox:
        config.addBoundingBoxStream()
    writer = dv.io.MonoCameraWriter(path, config)
    writer.setPackagingCount(4)
    for k, store in enumerate(events()):
        writer.writeEvents(store)
        if k < 2:
            image = (np.arange(16 * 12, dtype=np.uint8) * (k + 1)).reshape(12, 16)
            writer.writeFrame(dv.Frame(1000 + 3500 * k, image))
    for j in range(12):
        writer.writeImu(dv.IMU(1000 + 100 * j, 25.0, 0.0, 0.0, 1.0, 0.1 * j, 0.0, 0.0, 0.0, 0.0, 0.0))
    for j in range(5):
        writer.writeTrigger(dv.Trigger(1000 + 200 * j, dv.TriggerType.EXTERNAL_SIGNAL_RISING_EDGE))
    if bbox:
        boxes = dv.BoundingBoxPacket()
        boxes.elements.append(dv.BoundingBox(1500, 1.0, 2.0, 10.0, 12.0, 0.9, "digit"))
        writer.writeBoundingBoxes(boxes) if hasattr(writer, "writeBoundingBoxes") else writer.writeBoundingBoxesPacket(boxes)
    del writer


for name, compression in [
    ("none", dv.CompressionType.NONE),
    ("lz4", dv.CompressionType.LZ4),
    ("lz4_high", dv.CompressionType.LZ4_HIGH),
    ("zstd", dv.CompressionType.ZSTD),
    ("zstd_high", dv.CompressionType.ZSTD_HIGH),
]:
    write(f"dvp_{name}.aedat4", compression)
write("dvp_bbox_lz4.aedat4", dv.CompressionType.LZ4, bbox=True)
