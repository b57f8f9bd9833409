"""Writes the e2e test's model: a 2-layer OPT (hidden 128, 2 heads: head_dim 64) with
random weights from a fixed seed, saved with transformers' save_pretrained. No download.

Weights are drawn with std 0.3 (OPT's default 0.02 gives nearly uniform logits,
so the output would hardly depend on the KV cache)."""

from __future__ import annotations

import sys


def make_model(path: str, seed: int = 1234) -> str:
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, ffn_dim=256, num_attention_heads=2,
                    max_position_embeddings=2048, word_embed_proj_dim=128, init_std=0.3, do_layer_norm_before=True,
                    bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = OPTForCausalLM(cfg).to(torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    return path


if __name__ == "__main__":
    make_model(sys.argv[1])
