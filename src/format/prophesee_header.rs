//! The `%`-line ASCII header shared by Prophesee RAW (EVT 2.0 / 3.0) and DAT files.
