//! Integration tests: binner (filled by its owner).
