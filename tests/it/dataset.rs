//! Integration tests: dataset (filled by its owner).
