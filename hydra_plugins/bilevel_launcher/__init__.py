"""Hydra plugin package of bilevel-sweeps: the batched launcher (``hydra/launcher=batched``)."""
