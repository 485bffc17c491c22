"""Tests for the reservation read off the spacing of remaining steps (sans-IO)."""

from __future__ import annotations

import random

import pytest

from resilient_canvas._lattice import ReservationLattice


def _fed(reservations: list[float], steps: int, noise: float, seed: int = 3) -> ReservationLattice:
    """A lattice fed answers whose requests at the server change by a few at a time."""
    rng = random.Random(seed)
    lattice = ReservationLattice()
    held: list[float] = []
    at = 0.0
    for _ in range(steps):
        if held and (len(held) > 8 or rng.random() < 0.5):
            held.pop(rng.randrange(len(held)))
        else:
            held.append(rng.choice(reservations))
        at += 0.05
        remaining = 800.0 - sum(held) + rng.uniform(-noise, noise)
        lattice.observe(remaining, at, 0.0, 0, 0.0, leaking=True)
    return lattice


@pytest.mark.parametrize("reservation", [20.0, 50.0, 120.0, 333.0])
def test_spacing_is_the_reservation_not_a_divisor_of_it(reservation: float) -> None:
    """Any divisor fits the lattice too: the estimate is the largest spacing that fits."""
    lattice = _fed([reservation], steps=60, noise=1.0)

    estimate = lattice.spacing(noise_floor=3.0)

    assert estimate is not None
    assert reservation == pytest.approx(estimate[0], rel=0.02)


def test_reservations_that_differ_give_no_spacing() -> None:
    """Two routes reserving 25 and 110 leave steps no one spacing fits: no estimate."""
    lattice = _fed([25.0, 110.0], steps=60, noise=1.0)

    assert lattice.spacing(noise_floor=3.0) is None


def test_few_steps_give_no_spacing() -> None:
    """Fewer than the least number of significant steps: no estimate yet."""
    lattice = _fed([50.0], steps=5, noise=0.0)

    assert lattice.spacing(noise_floor=3.0) is None


def test_steps_across_a_gap_or_a_drained_count_are_not_steps() -> None:
    """Answers far apart, of another group, or with the count at zero make no step."""
    lattice = ReservationLattice()
    lattice.observe(500.0, 0.0, 0.0, 0, 0.0, leaking=True)
    lattice.observe(450.0, 5.0, 0.0, 0, 0.0, leaking=True)  # 5 s later
    lattice.observe(400.0, 5.1, 0.0, 1, 0.0, leaking=True)  # another group
    lattice.observe(350.0, 5.2, 0.0, 1, 0.0, leaking=False)  # count reached zero

    assert 0 == lattice.fresh_steps


def test_the_leak_and_the_answers_own_cost_are_taken_out_of_a_step() -> None:
    """remaining rises by the leak and falls by the answer's cost: neither is a reservation."""
    lattice = ReservationLattice()
    lattice.observe(400.0, 0.0, 0.0, 0, 10.0, leaking=True)
    # One request ended (+50), 0.2 s of leak (+2), its cost 1.5 charged.
    lattice.observe(450.5, 0.2, 1.5, 0, 10.0, leaking=True)

    assert [50.0] == pytest.approx(list(lattice._steps))
