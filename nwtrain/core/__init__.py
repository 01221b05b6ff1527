"""The physics no chip names: pure state updates, surrogate gradients, quantisers, the sign-block rule and
the generic layers and synapses the chip modules specialise (docs/architecture.md)."""
