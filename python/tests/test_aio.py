"""The asyncio client against a real kvblockd: futures resolved from the eventfd the C++ io thread signals."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import kvblockd
from kvblockd import errors
from kvblockd.aio import AsyncClient
from kvblockd.testing import DaemonProcess

KIND = "layer_separate_outer_block"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_round_trip_resolves_from_notifications(daemon, shape, salt) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(daemon.socket) as c:
            info = await c.hello(shape, tenant_salt=salt)
            assert info.session_id > 0
            region = kvblockd.KvRegion.create(shape, KIND, num_blocks=64)
            await c.register_kv(region)
            t = np.asarray(region.tensor(0))
            t[0, :32] = np.arange(32, dtype=np.float16)[:, None, None]  # K of blocks 0..31, layer 0
            hashes = [0xF000 + i for i in range(32)]
            # 32 offloads in flight at once on one connection, one fd on the loop.
            await asyncio.gather(*(c.offload([i], [hashes[i]]) for i in range(32)))
            assert (await c.lookup(hashes)).prefix_blocks == 32
            await asyncio.gather(*(c.onboard([32 + i], [hashes[i]]) for i in range(32)))
            assert np.array_equal(t[0, 32:], t[0, :32])
            assert t[0, 63, 0, 0] == 31
            assert c.in_flight == 0

    run(main())


def test_errors_are_the_errc_classes(daemon, shape, salt) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(daemon.socket) as c:
            await c.hello(shape, tenant_salt=salt)
            await c.register_kv(kvblockd.KvRegion.create(shape, KIND, num_blocks=2))
            with pytest.raises(errors.NotFound):
                await c.onboard([0], [0x5EED])
            with pytest.raises(errors.InvalidArgument):
                await c.offload([2], [1])

    run(main())


def test_each_future_gets_its_own_answer(daemon, shape, salt) -> None:
    async def main() -> None:
        async with await AsyncClient.connect(daemon.socket) as c:
            await c.hello(shape, tenant_salt=salt)
            await c.register_kv(kvblockd.KvRegion.create(shape, KIND, num_blocks=16))
            hashes = [0xAB00 + i for i in range(16)]
            await c.offload(list(range(16)), hashes)
            # 50 lookups in flight; lookup i asks for a prefix of i % 17 stored blocks + 1 unknown.
            results = await asyncio.gather(*(c.lookup(hashes[: i % 17] + [0xFFFF]) for i in range(50)))
            assert [r.prefix_blocks for r in results] == [i % 17 for i in range(50)]

    run(main())


def test_daemon_death_fails_every_awaiting_future() -> None:
    async def main() -> None:
        d = DaemonProcess()
        try:
            c = await AsyncClient.connect(d.socket)
            await c.hello(kvblockd.BlockShape(num_layers=1, page_size=16, inner_dim=8), tenant_salt=3)
            futures = [asyncio.ensure_future(c.lookup([i, i + 1])) for i in range(200)]
            await asyncio.sleep(0)  # the lookups are submitted
            d.kill()
            results = await asyncio.gather(*futures, return_exceptions=True)  # none hangs
            assert all(isinstance(r, (errors.PeerLost, kvblockd.LookupResult)) for r in results), results
            with pytest.raises(errors.PeerLost):
                await c.lookup([1])
            assert not c.is_open
            await c.close()
        finally:
            d.stop()

    run(main())


def test_close_cancels_awaiting_futures(daemon) -> None:
    async def main() -> None:
        c = await AsyncClient.connect(daemon.socket)
        fut = asyncio.ensure_future(c.stats())
        await c.close()
        with pytest.raises(errors.Cancelled):
            await fut
        with pytest.raises(errors.Cancelled):
            await c.stats()

    run(main())
