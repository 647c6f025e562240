//! Integration tests: formats_prophesee (filled by its owner).
