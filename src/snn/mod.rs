//! The spiking network: the single definition of the neuron dynamics, MPR and surrogates; layers,
//! the network graph, per-stream state and the model file. Imports nothing else from the crate.
