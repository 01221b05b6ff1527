"""Training a built network: the loop (``loop.fit``, ``loop.finish``), its state and checkpoints,
evaluation, losses, metrics, objectives, SignAnnealing, the schedule, tracking and plots. No config and no
Hydra here: ``nwtrain.runs`` builds a ``loop.Run`` from a config (docs/architecture.md)."""
