"""The simulator is a producer of the contract: everything it sends must be accepted whole."""

from __future__ import annotations

import json
from datetime import date

from fleetpulse.ingest.contract import MAX_PAYLOAD_BYTES, TELEMETRY_TOPIC, parse_message
from fleetpulse.ingest.native_columns import NativeColumns
from fleetpulse.simulators.fleet import Fleet


def _envelopes(seed: int) -> list[tuple[str, dict]]:
    return [e for _, hour in Fleet(12, 4, seed, date(2026, 3, 1)).hours() for e in hour]


def test_every_simulated_envelope_is_accepted_whole() -> None:
    envs = _envelopes(3)
    assert len(envs) > 500
    for device_id, env in envs:
        payload = json.dumps(env, separators=(",", ":")).encode()
        assert len(payload) <= MAX_PAYLOAD_BYTES
        parsed = parse_message(TELEMETRY_TOPIC.format(device_id=device_id), payload,
                               env["sent_ms"] + 1000)
        assert parsed.rejects == []
        assert len(parsed.readings) + len(parsed.events) == len(env["records"])
        # and through ingest's first path: a simulated fleet is timed on the path a real one takes
        assert NativeColumns().add(device_id, payload, env["sent_ms"] + 1000) is not None


def test_identity_is_unique_and_seq_restarts_per_boot() -> None:
    seen = set()
    last: dict[tuple[str, int], int] = {}
    for device_id, env in _envelopes(5):
        key = (device_id, env["boot"], env["seq"])
        assert key not in seen
        seen.add(key)
        prev = last.get((device_id, env["boot"]), -1)
        assert env["seq"] == prev + 1
        last[(device_id, env["boot"])] = env["seq"]


def test_same_seed_same_fleet_different_seed_different_fleet() -> None:
    assert _envelopes(11) == _envelopes(11)
    assert _envelopes(11) != _envelopes(12)


def test_tiny_fleets_work() -> None:
    for days in (1, 2):
        assert [e for _, hour in Fleet(3, days, 1, date(2026, 3, 1)).hours() for e in hour]


def test_parts_of_the_fleet_send_what_the_whole_fleet_sends() -> None:
    """simulate's processes each take an interleaved part: together they send exactly
    the whole fleet's envelopes, and their merged truth is the whole fleet's."""
    import orjson

    from fleetpulse.simulators.truth import Truth

    def sent(part: tuple[int, int]) -> tuple[list[bytes], Truth]:
        truth = Truth()
        out = []
        for _, hour in Fleet(12, 4, 9, date(2026, 3, 1), part).hours():
            for _, env in hour:
                truth.add(env)
                out.append(orjson.dumps(env))
        return out, truth

    whole, whole_truth = sent((0, 1))
    parts = [sent((k, 3)) for k in range(3)]
    assert sorted(b for p, _ in parts for b in p) == sorted(whole)
    assert all(p for p, _ in parts), "every part has devices"
    merged = Truth()
    for _, t in parts:
        merged.merge(t)
    meta = {"plan": {d.device_id: d.plan() for d in Fleet(12, 4, 9, date(2026, 3, 1)).devices}}
    assert merged.to_dict(meta) == whole_truth.to_dict(meta)


def test_simulate_sends_the_same_with_any_number_of_processes(broker) -> None:
    from conftest import fleet_credentials

    from fleetpulse.simulators.simulate import simulate

    user, password = fleet_credentials(broker)
    truths = [simulate(broker.host, broker.port, devices=30, days=3, seed=4, progress=False,
                       username=user, password=password, workers=w) for w in (1, 3)]
    assert truths[0] == truths[1] and truths[0]["messages"] > 1000


def test_rate_holds_the_fleet_to_what_a_consumer_drains(broker) -> None:
    """--rate paces publishing (and changes nothing sent): a worker cannot have sent its
    c-th message before c / rate seconds, checked every PACE_EVERY messages."""
    import time

    from conftest import fleet_credentials

    from fleetpulse.simulators.simulate import PACE_EVERY, simulate

    user, password = fleet_credentials(broker)
    began = time.monotonic()
    paced = simulate(broker.host, broker.port, devices=30, days=3, seed=4, progress=False,
                     username=user, password=password, rate=1000)
    took = time.monotonic() - began
    n = paced["messages"]
    assert took >= (n // PACE_EVERY) * PACE_EVERY / 1000 > 1.0, (took, n)
    free = simulate(broker.host, broker.port, devices=30, days=3, seed=4, progress=False,
                    username=user, password=password)
    assert paced == free
