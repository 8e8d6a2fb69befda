"""bilevel-sweeps: Hydra-configured JAX bilevel optimization run as vmap-batched sweeps."""
