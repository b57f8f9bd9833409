"""One vLLM CPU engine run in its own process (the e2e test starts several).

    python engine_run.py SPEC.json OUT.json

SPEC: model, phases (a list of lists of prompts, each a list of token ids;
each phase is one llm.generate call), max_tokens, connector (null or a dict:
socket, load_async, in_place, connector class name and module path).
OUT: per phase, per prompt: token ids, their logprobs, num_cached_tokens;
and the connector's STATS when a connector ran, and the wall time per phase.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(spec_path: str, out_path: str) -> None:
    spec = json.load(open(spec_path))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from vllm import LLM, SamplingParams
    from vllm.config import KVTransferConfig
    from vllm.inputs import TokensPrompt

    kwargs = {}
    conn = spec.get("connector")
    if conn:
        kwargs["kv_transfer_config"] = KVTransferConfig(
            kv_connector=conn.get("class", "KvblockdConnector"),
            kv_connector_module_path=conn.get("module", "kvblockd.vllm"),
            kv_role="kv_both", kv_load_failure_policy="recompute",
            kv_connector_extra_config={k: conn[k] for k in ("socket", "load_async", "in_place") if k in conn})
    llm = LLM(model=spec["model"], skip_tokenizer_init=True, block_size=32, dtype="float32", enforce_eager=True,
              max_model_len=1024, max_num_seqs=8, enable_prefix_caching=True, seed=0,
              disable_hybrid_kv_cache_manager=True, **kwargs)
    params = SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"], logprobs=1, detokenize=False)
    out = {"phases": [], "phase_s": []}
    for phase in spec["phases"]:
        t0 = time.perf_counter()
        results = llm.generate([TokensPrompt(prompt_token_ids=p) for p in phase], params, use_tqdm=False)
        out["phase_s"].append(time.perf_counter() - t0)
        rows = []
        for r in results:
            c = r.outputs[0]
            rows.append({"tokens": list(c.token_ids),
                         "logprobs": [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)],
                         "num_cached_tokens": r.num_cached_tokens})
        out["phases"].append(rows)
    if conn:
        from kvblockd.vllm import STATS
        out["stats"] = dataclasses.asdict(STATS)
    json.dump(out, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
