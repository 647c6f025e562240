#!/usr/bin/env python3
"""Writes the AEDAT 3.1 fixture and the malformed AEDAT 2.0 / 3.1 / ATIS inputs, straight from the
format descriptions (jAER and iniVation docs, libcaer events/*.h, Orchard N-MNIST
reader), independently of inflor's encoders. Plain Python 3, no dependencies.
Run from the repository root: python3 tests/data/jaer/make_fixtures.py"""
import struct

def packet(kind, size, overflow, capacity, number, valid=None, ts_offset=4, source=1):
    valid = number if valid is None else valid
    return struct.pack('<hhiiiiii', kind, source, size, ts_offset, overflow, capacity, number, valid)

def polarity(x, y, on, t, valid=True):
    return struct.pack('<Ii', (x << 17) | (y << 2) | (int(on) << 1) | int(valid), t)

HEADER = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#-Source 0: DAVIS240C\r\n"
          b"#Start-Time: 2017-03-01 10:00:00 (TZ+0100)\r\n#!END-HEADER\r\n")

# Fixture: every packet kind the decoder distinguishes. Expected events (t, x, y, on):
# (100, 10, 20, True), (200, 127, 127, False), (2**31 + 5, 0, 0, True); skipped: 2 special,
# 1 invalid polarity event, 1 frame, 2 IMU6.
mixed = bytearray(HEADER)
mixed += packet(0, 8, 0, 2, 2) + struct.pack('<Ii', 0x11, 50) + struct.pack('<Ii', 0x21, 60)
mixed += packet(1, 8, 0, 4, 3) + polarity(10, 20, True, 100) + polarity(5, 5, True, 150, valid=False)
mixed += polarity(127, 127, False, 200) + bytes(8)  # one unused slot (capacity 4, number 3)
mixed += packet(2, 36, 0, 1, 1) + bytes(range(36))
mixed += packet(1, 8, 1, 1, 1) + polarity(0, 0, True, 5)
mixed += packet(3, 36, 1, 2, 2) + bytes(72)
open('tests/data/jaer/aedat31_mixed_packets.aedat', 'wb').write(mixed)

m = 'tests/data/malformed/aedat3/'
open(m + 'aedat30_magic.aedat', 'wb').write(b"#!AER-DAT3.0\r\n#!END-HEADER\r\n")
open(m + 'no_end_header.aedat', 'wb').write(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n")
open(m + 'forged_capacity.aedat', 'wb').write(HEADER + packet(1, 8, 0, 2**31 - 1, 1) + polarity(1, 1, True, 1))
open(m + 'truncated_packet.aedat', 'wb').write(HEADER + packet(1, 8, 0, 2, 2) + polarity(1, 1, True, 1))
open(m + 'truncated_packet_header.aedat', 'wb').write(HEADER + packet(1, 8, 0, 1, 1)[:20])
open(m + 'polarity_event_size_12.aedat', 'wb').write(HEADER + packet(1, 12, 0, 1, 1) + bytes(12))
open(m + 'number_exceeds_capacity.aedat', 'wb').write(HEADER + packet(1, 8, 0, 1, 2) + bytes(16))
open(m + 'format_not_raw.aedat', 'wb').write(HEADER.replace(b"RAW", b"SerializedTS"))
open(m + 'x_out_of_range.aedat', 'wb').write(HEADER + packet(1, 8, 0, 1, 1) + polarity(200, 3, True, 1))
open(m + 'negative_timestamp.aedat', 'wb').write(HEADER + packet(1, 8, 0, 1, 1) + polarity(2, 3, True, -5))
open(m + 'unknown_source.aedat', 'wb').write(HEADER.replace(b"DVS128", b"Mystery").replace(b"DAVIS240C", b"Other"))

a = 'tests/data/malformed/atis/'
ok = bytes([3, 4, 0x80, 0, 10, 5, 6, 0, 0, 20])
open(a + 'truncated_record.bin', 'wb').write(ok + bytes([1, 2, 0]))
open(a + 'y_out_of_range.bin', 'wb').write(ok + bytes([1, 250, 0, 0, 30]))
open(a + 'single_partial_record.bin', 'wb').write(bytes([1, 2]))

m2 = 'tests/data/malformed/aedat2/'
H2 = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
def rec(address, t):
    return struct.pack('>II', address, t)
open(m2 + 'truncated_record.aedat', 'wb').write(H2 + rec(0x0102, 10) + rec(0x0204, 20)[:5])
open(m2 + 'davis_x_out_of_range.aedat', 'wb').write(
    H2 + b"# AEChip: eu.seebetter.ini.chips.davis.DAVIS240C\r\n" + rec((10 << 22) | (500 << 12), 10))
open(m2 + 'unsupported_version.aedat', 'wb').write(b"#!AER-DAT7.0\r\n" + rec(0x0102, 10))
open(m2 + 'unknown_chip.aedat', 'wb').write(H2 + b"# AEChip: org.example.NotAChip\r\n" + rec(0x0102, 10))
open(m2 + 'dvs128_address_bits_16_to_30.aedat', 'wb').write(H2 + rec(0x0102, 10) + rec(0x00100102, 20))
open(m2 + 'unterminated_header_line.aedat', 'wb').write(H2 + b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128")
open(m2 + 'empty.aedat', 'wb').write(b"")
