//! Labelled event datasets: the CIFAR10-DVS layout and splits, generic labelled folders, and the
//! DVS emulator. Imports `event`, `format` and `binner`.
