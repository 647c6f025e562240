//! Executors: the dense reference, the event-driven executor and spike statistics.
//! Imports `snn` and the frame type from `binner`.
