"""The blocking client against a real kvblockd: round trips, errors, zero-copy views."""

from __future__ import annotations

import numpy as np
import pytest

import kvblockd
from kvblockd import errors

KIND = "layer_separate_block_outer"


def fill(region: kvblockd.KvRegion, block: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in range(region.shape.num_layers):
        for outer in range(region.shape.outer_dim):
            chunk = np.asarray(region.chunk(block, layer, outer))
            chunk[:] = rng.integers(0, 256, chunk.size, dtype=np.uint8)


def block_bytes(region: kvblockd.KvRegion, block: int) -> bytes:
    return b"".join(bytes(np.asarray(region.chunk(block, l, o)))
                    for l in range(region.shape.num_layers) for o in range(region.shape.outer_dim))


def test_hello_answers_session_and_version(client: kvblockd.Client, daemon) -> None:
    with kvblockd.connect(daemon.socket) as other:
        info = other.hello(kvblockd.BlockShape(num_layers=1, page_size=16, inner_dim=8))
    assert info.session_id > 0
    assert info.version == 1
    assert info.max_inflight > 0
    assert info.server_version


def test_offload_lookup_onboard_is_byte_exact(client: kvblockd.Client, shape) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=8)
    client.register_kv(region)
    hashes = [0xA000 + i for i in range(4)]
    for b in range(4):
        fill(region, b, seed=b + 1)
    client.offload([0, 1, 2, 3], hashes)
    found = client.lookup(hashes + [0xDEAD])
    assert found.prefix_blocks == 4
    assert found.tiers[kvblockd.Tier.G2] == 4
    client.onboard([4, 5, 6, 7], hashes)
    for b in range(4):
        assert block_bytes(region, 4 + b) == block_bytes(region, b)
        assert any(block_bytes(region, b))  # not trivially equal zeros


def test_other_tenants_do_not_see_the_blocks(client: kvblockd.Client, daemon, shape, salt) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=2)
    client.register_kv(region)
    client.offload([0], [0xB001])
    with kvblockd.connect(daemon.socket) as same, kvblockd.connect(daemon.socket) as other:
        same.hello(shape, tenant_salt=salt)
        other.hello(shape, tenant_salt=salt + 1)
        assert same.lookup([0xB001]).prefix_blocks == 1
        assert other.lookup([0xB001]).prefix_blocks == 0


def test_locate_reports_this_daemons_prefix(client: kvblockd.Client, daemon, shape, salt) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=2)
    client.register_kv(region)
    client.offload([0, 1], [0xC001, 0xC002])
    assert client.locate([0xC001, 0xC002, 0xC003]) == [kvblockd.WorkerPrefix("", 2)]
    with kvblockd.connect(daemon.socket) as other:
        other.hello(shape, tenant_salt=salt + 1)
        assert other.locate([0xC001]) == [kvblockd.WorkerPrefix("", 0)]


def test_onboard_of_a_missing_hash_raises_not_found(client: kvblockd.Client, shape) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=2)
    client.register_kv(region)
    with pytest.raises(errors.NotFound) as info:
        client.onboard([0], [0xC0FFEE])
    assert info.value.errc == "not_found" and info.value.code == 2
    assert isinstance(info.value, kvblockd.KvblockdError) and isinstance(info.value, LookupError)
    assert str(info.value).startswith("not_found: ")


def test_refusals_carry_the_errc(client: kvblockd.Client, daemon, shape) -> None:
    with pytest.raises(errors.WrongState):  # offload before register_kv
        client.offload([0], [1])
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=2)
    client.register_kv(region)
    with pytest.raises(errors.InvalidArgument):  # engine block past num_blocks
        client.offload([7], [1])
    with pytest.raises(errors.InvalidArgument, match="2 engine blocks but 1 hashes"):
        client.offload([0, 1], [1])
    with pytest.raises(errors.WrongState):  # a second hello
        client.hello(shape)


def test_pin_and_release(client: kvblockd.Client, shape) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=2)
    client.register_kv(region)
    client.offload([0, 1], [0xD1, 0xD2])
    assert client.lookup([0xD1, 0xD2], pin=True).prefix_blocks == 2
    assert client.stats()["leased_blocks"] >= 2
    assert client.release([0xD1]) == 1
    assert client.release() == 1


def test_nowait_status_and_wait(client: kvblockd.Client, shape) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=4)
    client.register_kv(region)
    pending = client.offload_nowait([0, 1], [0xE1, 0xE2])
    assert pending.request_id > 0
    assert pending.result() is None
    assert pending.done()
    st = client.status(pending.request_id)
    assert st.state == kvblockd.RequestState.OK
    assert client.wait(pending.request_id, 1000).state == kvblockd.RequestState.OK


def test_stats_and_config(client: kvblockd.Client) -> None:
    stats = client.stats()
    assert stats["sessions"] >= 1
    assert "host_pool_bytes" in client.config() or client.config()


def test_connect_to_nothing_raises_io_error(tmp_path) -> None:
    with pytest.raises(errors.IoError, match="connect to kvblockd socket"):
        kvblockd.connect(str(tmp_path / "none.sock"))


def test_daemon_death_fails_pending_and_later_requests(shape) -> None:
    from kvblockd.testing import DaemonProcess
    d = DaemonProcess()
    try:
        c = kvblockd.connect(d.socket, timeout=10)
        c.hello(shape, tenant_salt=1)
        d.kill()
        with pytest.raises(errors.PeerLost):
            c.lookup([1])
        with pytest.raises(errors.PeerLost):
            c.lookup([1])
        assert not c.is_open
    finally:
        d.stop()


def test_close_cancels_and_later_calls_fail(daemon, shape) -> None:
    c = kvblockd.connect(daemon.socket)
    c.hello(shape, tenant_salt=5)
    c.close()
    with pytest.raises((errors.PeerLost, errors.Cancelled)):
        c.lookup([1])


def test_errc_names_match_the_cpp_library() -> None:
    names = kvblockd._core.errc_names()
    assert len(names) == len(errors.BY_CODE) + 1  # + ok
    for code, name in enumerate(names[1:], start=1):
        assert errors.BY_CODE[code].errc == name
    assert errors.error_for(999, "x").code == 999


def test_region_views_are_zero_copy(shape) -> None:
    region = kvblockd.KvRegion.create(shape, KIND, num_blocks=3)
    raw = np.asarray(region.buffer(1))
    assert raw.dtype == np.uint8 and raw.size == region.region_bytes
    typed = np.asarray(region.tensor(1))
    assert typed.dtype == np.float16 and typed.shape == (3, 2, 16, 64)
    typed[2, 1, 3, 5] = 1.5
    region_idx, offset = region.place(2, 1, 1)
    assert region_idx == 1
    chunk = np.asarray(region.chunk(2, 1, 1)).view(np.float16)
    assert chunk[3 * 64 + 5] == 1.5
    assert raw.view(np.float16)[offset // 2 + 3 * 64 + 5] == 1.5
    assert np.shares_memory(raw, typed)
    del region  # the views keep the mapping alive
    assert chunk[3 * 64 + 5] == 1.5


def test_fully_contiguous_tensor_strides_follow_alignment() -> None:
    s = kvblockd.BlockShape(num_layers=1, page_size=3, inner_dim=5, outer_dim=1, dtype="f32", alignment=64)
    region = kvblockd.KvRegion.create(s, "fully_contiguous", num_blocks=4)
    t = np.asarray(region.tensor(0))
    assert t.shape == (4, 1, 1, 3, 5)
    assert t.strides[0] == 64  # 60 bytes of payload, padded to the alignment
    t[1, 0, 0, 0, 0] = 7.0
    assert np.asarray(region.buffer(0)).view(np.float32)[16] == 7.0


def test_bad_arguments_raise_invalid_argument(shape) -> None:
    with pytest.raises(errors.InvalidArgument, match="unknown layout"):
        kvblockd.KvRegion.create(shape, "rows", 4)
    with pytest.raises(errors.InvalidArgument, match="unknown dtype"):
        kvblockd.BlockShape(num_layers=1, page_size=16, inner_dim=8, dtype="f64")
    with pytest.raises(errors.InvalidArgument, match="num_blocks"):
        kvblockd.KvRegion.create(shape, KIND, 0)
    region = kvblockd.KvRegion.create(shape, KIND, 1)
    with pytest.raises(errors.InvalidArgument, match="out of range"):
        region.chunk(1, 0, 0)
