"""Keyword-spotting networks, built for any registered chip from the chip spec's parts."""

from nwtrain.models.kws import KWSNet, hidden_sizes, layer_names, neuron_taus, recurrence

__all__ = ["KWSNet", "hidden_sizes", "layer_names", "neuron_taus", "recurrence"]
