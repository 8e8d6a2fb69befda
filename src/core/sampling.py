"""Minibatches of a finite-sum objective: contiguous blocks of samples in a shuffled order.

An objective that is a finite sum (``G = 1/n sum_i g_i``) names the data arrays that hold
one row per sample (``Objective.inner_samples`` / ``outer_samples``). A minibatch is a
contiguous block of ``size`` rows starting at a *traced* index, cut with
``lax.dynamic_slice``, so that jobs with different samplers are one program:

* the samples are split into ``ceil(n / size)`` batches, the last one smaller;
* a :class:`Sampler` walks through them in an order reshuffled every epoch from its key
  (a keyed pseudo-random permutation, :func:`shuffled`; its state is part of the scan carry);
* :func:`view` turns the data into the data of one batch: the per-sample arrays sliced,
  plus the weights that :func:`mean` uses, so an objective's loss written with
  :func:`mean` and :func:`take` is the mean over the batch. The last, smaller batch is
  cut as the last ``size`` rows with the rows of the batch before it weighted 0 (no
  padding, one shape).

``Batch.weight``: a batch's share of the whole sum (``size / n``, smaller for the last
batch), as SAGA's running averages need (benchmark_bilevel's ``MinibatchSampler``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

WEIGHTS = "_weights_{}"  # data key of a batch view's per-sample weights, per part
START = "_start_{}"  # data key of the first row of the slice, per part


class SamplerState(NamedTuple):
    key: Any
    rounds: Any  # uint32 (ROUNDS,): this epoch's shuffle (the round keys of a Feistel permutation)
    position: Any  # int32: the next position in this epoch's order


class Batch(NamedTuple):
    index: Any  # int32: which batch (0 ... n_batches - 1)
    start: Any  # int32: its first sample
    weight: Any  # float: its share of the sum (samples in it / n)


ROUNDS = 4


def _mix(x, k):
    """A 32-bit integer hash of ``x`` keyed by ``k`` (murmur3's finalizer)."""
    x = (x ^ k) * jnp.uint32(0x9E3779B1)
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def shuffled(position, rounds, n: int):
    """Where ``position`` goes in a pseudo-random permutation of ``range(n)`` keyed by
    ``rounds``: a balanced Feistel network on the smallest even number of bits that holds
    ``n``, cycle-walked back into range. O(1) per draw, where ``jax.random.permutation``
    would sort all ``n`` every step (under ``vmap`` a reshuffle cannot be skipped on the
    steps that do not need it)."""
    if n == 1:
        return jnp.zeros_like(position)
    half = max(1, -(-int(n - 1).bit_length() // 2))
    mask = jnp.uint32((1 << half) - 1)

    def network(x):
        left, right = x >> half, x & mask
        for r in range(ROUNDS):
            left, right = right, left ^ (_mix(right, rounds[r]) & mask)
        return (left << half) | right

    x = network(position.astype(jnp.uint32))
    x = jax.lax.while_loop(lambda x: x >= n, network, x)  # at most a few rounds: 2^(2 half) < 4 n
    return x.astype(jnp.int32)


class Sampler(NamedTuple):
    """Batches of ``size`` samples out of ``n`` (``size >= n``: one batch, the full sum)."""

    n: int
    size: int

    @property
    def batches(self) -> int:
        return -(-self.n // self.size)

    @property
    def full(self) -> bool:
        return self.size >= self.n

    def init(self, key) -> SamplerState:
        key, sub = jax.random.split(key)
        return SamplerState(key, jax.random.bits(sub, (ROUNDS,), jnp.uint32), jnp.asarray(0, jnp.int32))

    def next(self, state: SamplerState) -> tuple[Batch, SamplerState]:
        index = upcoming(state, self.batches)
        position = state.position + 1
        wrap = position == self.batches  # a new epoch: a new order
        if self.full:
            state = state._replace(position=jnp.where(wrap, 0, position))
        else:

            def reshuffle(key, rounds):
                key, sub = jax.random.split(key)
                return key, jax.random.bits(sub, (ROUNDS,), jnp.uint32)

            # a branch, not a select: where every job of a batch is at the same position (the
            # single-loop methods; see ``SingleLoop.batch_axes``) ``wrap`` is unbatched under
            # vmap and the keys are drawn once an epoch instead of every step
            key, rounds = jax.lax.cond(wrap, reshuffle, lambda *a: a, state.key, state.rounds)
            state = SamplerState(key, rounds, jnp.where(wrap, 0, position))
        start = index * min(self.size, self.n)
        count = jnp.minimum(self.size, self.n - start)
        return Batch(index, start.astype(jnp.int32), count / self.n), state


def upcoming(state: SamplerState, batches: int):
    """The index of the batch that the next draw from ``state`` returns (``Sampler.next``)."""
    return shuffled(state.position, state.rounds, batches)


def count(data, keys: tuple[str, ...]) -> int:
    """The number of samples of a part (rows of its first per-sample array)."""
    return int(data[keys[0]].shape[0])


def view(data: dict, part: str, keys: tuple[str, ...], start, size: int) -> dict:
    """The data of the batch of ``size`` samples of ``part`` (``"inner"``/``"outer"``)
    from ``start``: its per-sample arrays sliced, with the weights :func:`mean` uses."""
    n = count(data, keys)
    if size >= n:
        return data
    first = jnp.minimum(start, n - size)  # the last, smaller batch: the last `size` rows
    rows = first + jnp.arange(size)
    valid = rows >= start
    out = dict(data)
    for k in keys:
        x = data[k]
        out[k] = jax.lax.dynamic_slice_in_dim(x, first, size, axis=0)
    dtype = jnp.result_type(float)
    out[WEIGHTS.format(part)] = valid.astype(dtype) / jnp.sum(valid).astype(dtype)
    out[START.format(part)] = first
    return out


def mean(values, data: dict, part: str):
    """The mean of per-sample values over the samples of ``data`` (a batch view or all)."""
    weights = data.get(WEIGHTS.format(part))
    return jnp.mean(values) if weights is None else jnp.sum(weights * values)


def take(x, data: dict, part: str):
    """The rows of a per-sample array that is not in the data (an outer variable with
    one entry per sample, like data cleaning's weights) for the batch of ``data``."""
    start = data.get(START.format(part))
    if start is None:
        return x
    size = data[WEIGHTS.format(part)].shape[0]
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)


class Work(NamedTuple):
    """Oracle calls and samples touched, cumulative over a run (or one step's share).

    ``oracle_inner``: evaluations of ``grad_z g``, ``hess_zz g . v`` or ``hess_xz g . v`` on
    one minibatch; ``oracle_outer``: partial gradients of ``f`` on one minibatch (``grad_z f``
    and ``grad_x f`` count two, benchmark_bilevel's convention). A full-batch evaluation
    counts ``n / batch_size`` calls (one where ``batch_size`` is null)."""

    oracle_inner: Any
    oracle_outer: Any
    samples_inner: Any
    samples_outer: Any

    @staticmethod
    def zero():
        f = lambda: jnp.zeros((), jnp.result_type(float))
        return Work(f(), f(), f(), f())

    def __add__(self, other: Work) -> Work:  # type: ignore[override]
        return Work(*(a + b for a, b in zip(self, other, strict=True)))


def sizes(objective, data) -> tuple[int, int]:
    """Samples of the inner and outer sums (1 for an objective that is not a finite sum)."""
    n = lambda keys: count(data, keys) if keys else 1
    return n(objective.inner_samples), n(objective.outer_samples)


def full_batch_work(objective, data, batch_size: int | None, calls_inner, calls_outer) -> Work:
    """What ``calls_*`` full-batch evaluations cost, in minibatches of ``batch_size``."""
    n_in, n_out = sizes(objective, data)
    unit = lambda n: n / min(batch_size, n) if batch_size else 1.0
    dtype = jnp.result_type(float)
    c_in, c_out = jnp.asarray(calls_inner, dtype), jnp.asarray(calls_outer, dtype)
    return Work(c_in * unit(n_in), c_out * unit(n_out), c_in * n_in, c_out * n_out)
