"""The fastest a bulk job can go under Canvas's throttle: a leaky-bucket lower bound."""

from __future__ import annotations


def bucket_lower_bound(
    calls: int,
    *,
    service_time: float,
    cost: float,
    hwm: float = 600.0,
    up_front_cost: float = 50.0,
    outflow: float = 10.0,
    step: float = 0.001,
) -> float:
    """Return the shortest wall time, in seconds, Canvas's bucket allows for *calls* calls.

    Keeps the most requests in flight the bucket admits
    (``level + (n + 1) * up_front_cost < hwm``), each adding *cost* when it
    ends after *service_time*, the level leaking at *outflow*; network time
    is taken as zero, so no real client can beat it.

    Raises:
        ValueError: For non-positive parameters or a bucket that admits nothing.
    """
    if calls < 0 or service_time <= 0 or step <= 0 or outflow <= 0:
        raise ValueError("calls must not be negative; service_time, step, outflow positive.")
    if up_front_cost >= hwm:
        raise ValueError("A bucket whose up_front_cost reaches hwm admits no request.")
    level, now, started, done = 0.0, 0.0, 0, 0
    ends: list[float] = []
    while done < calls:
        finished = sum(1 for end in ends if end <= now)
        if finished:
            ends = [end for end in ends if end > now]
            done += finished
            level += cost * finished
        while started < calls and level + (len(ends) + 1) * up_front_cost < hwm:
            ends.append(now + service_time)
            started += 1
        now += step
        level = max(0.0, level - outflow * step)
    return now
