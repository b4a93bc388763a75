import torch

from benchmarks.arithmetic.gpt2 import GPT2, GPT2Config


def test_layout_and_parameter_count_match_transformers_gpt2():
    from transformers import GPT2Config as HFConfig
    from transformers import GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=1001, n_positions=4, n_embd=128, n_layer=3, n_head=4, n_inner=512)
    hf = GPT2LMHeadModel(
        HFConfig(
            vocab_size=1001,
            n_positions=4,
            n_embd=128,
            n_layer=3,
            n_head=4,
            n_inner=512,
        )
    )
    ours = GPT2(cfg)
    hf_params = {n: tuple(p.shape) for n, p in hf.named_parameters()}
    our_params = {n: tuple(p.shape) for n, p in ours.named_parameters()}
    assert our_params == hf_params  # names, order-insensitive, and shapes
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in hf.parameters())
    # same function: load the HF weights and compare logits (eval mode, no dropout)
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not missing and all(
        k.endswith("attn.bias") or k.endswith("masked_bias") for k in unexpected
    )
    hf.eval()
    ours.eval()
    idx = torch.randint(0, 1001, (5, 4))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            ours(idx, last_only=True), hf(idx).logits[:, -1], atol=1e-4, rtol=1e-4
        )


def test_init_is_deterministic_and_gpt2_scaled():
    cfg = GPT2Config(vocab_size=50, n_layer=4)
    torch.manual_seed(0)
    a = GPT2(cfg)
    torch.manual_seed(0)
    b = GPT2(cfg)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    proj = a.transformer.h[0].mlp.c_proj.weight
    assert abs(proj.std().item() - 0.02 / (2 * 4) ** 0.5) < 0.002
    assert a.lm_head.weight is a.transformer.wte.weight
