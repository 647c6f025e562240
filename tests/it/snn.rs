//! Integration tests: snn (filled by its owner).
