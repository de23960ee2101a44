"""Admission control: how many requests may send their bodies, run and wait, and the 503 past that."""

from __future__ import annotations

from collections.abc import Hashable

from lambda_onnx.errors import OverloadedError


class Gate:
    """Admission control in two stages, each refusing with 503 past its bound.

    Receiving: at most ``max_receiving`` requests sending their bodies (cheap, but each may hold up
    to the byte limit), and at most ``max_receiving_per_client`` of them from one client address (a
    quarter by default, at least two), so that slow senders from one address cannot hold every place for the
    body timeout and lock the others out. Classifying, once the body is complete: ``max_concurrency`` running,
    ``max_queue`` waiting. A client that stalls mid-body holds a receiving place only, so it
    never takes an inference slot from complete requests.

    :meth:`refusal` answers from the request head alone, before a byte of the body is read: past
    capacity a refused request costs its headers, not its body. :meth:`admit` checks again once the
    body is complete (the places may have filled meanwhile). Used from the event loop's thread only.
    """

    def __init__(self, max_concurrency: int, max_queue: int, max_receiving: int = 64,
                 max_receiving_per_client: int | None = None) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.max_receiving = max_receiving
        # A quarter, and at least two (one stalled body never shuts its own client out), never above the total.
        self.max_receiving_per_client = max_receiving_per_client or min(max_receiving, max(2, max_receiving // 4))
        self.in_flight = 0  # admitted to classify: running or waiting
        self.receiving = 0  # bodies being read
        self._receiving_from: dict[Hashable, int] = {}  # client address -> its bodies being read

    @property
    def capacity(self) -> int:
        return self.max_concurrency + self.max_queue

    def _full(self) -> OverloadedError:
        return OverloadedError(f"server at capacity: {self.max_concurrency} classifying and {self.max_queue} waiting; "
                               "retry shortly")

    def _receiving_full(self) -> OverloadedError:
        return OverloadedError(f"server at capacity: {self.max_receiving} requests are still sending their bodies; "
                               "retry shortly")

    def _client_full(self) -> OverloadedError:
        return OverloadedError(f"server at capacity for this client: {self.max_receiving_per_client} of its requests are "
                               "still sending their bodies; retry shortly")

    def refusal(self, client: Hashable = None) -> OverloadedError | None:
        """The reason to refuse a request from ``client`` (its address) now, from its head (None: read its body)."""
        if self.in_flight >= self.capacity:
            return self._full()
        if self.receiving >= self.max_receiving:
            return self._receiving_full()
        if self._receiving_from.get(client, 0) >= self.max_receiving_per_client:
            return self._client_full()
        return None

    def start_receiving(self, client: Hashable = None) -> None:
        if self.receiving >= self.max_receiving:
            raise self._receiving_full()
        if self._receiving_from.get(client, 0) >= self.max_receiving_per_client:
            raise self._client_full()
        self.receiving += 1
        self._receiving_from[client] = self._receiving_from.get(client, 0) + 1

    def done_receiving(self, client: Hashable = None) -> None:
        self.receiving -= 1
        left = self._receiving_from.get(client, 1) - 1
        if left > 0:
            self._receiving_from[client] = left
        else:
            self._receiving_from.pop(client, None)

    def admit(self) -> None:
        if self.in_flight >= self.capacity:
            raise self._full()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
