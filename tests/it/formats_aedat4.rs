//! Integration tests: formats_aedat4 (filled by its owner).
