"""nwtrain: spiking keyword-spotting networks for Neuronova H1v1 / H1v2 analog chips."""

__version__ = "0.1.0"
