"""From a trained network to a chip: design rules, projection and the artefact (``export``), its numpy
simulator (``chipsim``), Monte-Carlo chip instances and yield (``mismatch``), and streaming keyword
detection (``streaming``)."""
