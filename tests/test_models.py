"""The Subject interface on tiny models: backend parity, weight addressing, snapshots, training."""

from __future__ import annotations

import copy

import pytest
import torch

import unlearn_lens as ul
from unlearn_lens.data.items import Item
from unlearn_lens.models.bridge_backend import boot_bridge

ITEMS = [
    Item("The capital of France is", " Paris"),
    Item(text="def x ( ) : return 1 + 2"),
    Item("The capital of Veltravia is", " Orsenne"),
]
PARITY_ATOL = 1e-5
"""Both backends run the same float32 modules; only hook plumbing differs, so agreement is to rounding."""


def _hf_reference(model, batch):
    """The HF model's own forward (hidden states of every block) as the independent reference."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        return reference(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )


def _final_norm(model):
    return model.model.norm if hasattr(model, "model") else model.transformer.ln_f


def test_backends_agree_with_each_other_and_with_hf(tiny_model, tiny_tok, both_backends):
    reference_model = copy.deepcopy(tiny_model)
    tl, nn = both_backends["transformer_lens"], both_backends["nnsight"]
    batch = tl.encode(ITEMS)
    streams = range(tl.n_streams)
    out_tl = tl.run(batch, residual_layers=streams)
    out_nn = nn.run(batch, residual_layers=streams)
    ref = _hf_reference(reference_model, batch)
    torch.testing.assert_close(out_tl.logits, ref.logits, atol=PARITY_ATOL, rtol=0)
    torch.testing.assert_close(out_nn.logits, ref.logits, atol=PARITY_ATOL, rtol=0)
    last = tl.n_streams - 1
    for index in streams:
        torch.testing.assert_close(
            out_tl.residuals[index], out_nn.residuals[index], atol=PARITY_ATOL, rtol=0
        )
        # transformers applies the final norm to its last hidden state; our streams are pre-norm.
        expected = ref.hidden_states[index] if index < last else None
        if expected is None:
            with torch.no_grad():
                torch.testing.assert_close(
                    _final_norm(reference_model)(out_tl.residuals[index]),
                    ref.hidden_states[index],
                    atol=PARITY_ATOL,
                    rtol=0,
                )
        else:
            torch.testing.assert_close(out_tl.residuals[index], expected, atol=PARITY_ATOL, rtol=0)


def test_padding_changes_no_real_token_output(both_backends):
    for subject in both_backends.values():
        alone = subject.run(subject.encode(ITEMS[:1]), residual_layers=[1]).logits[0]
        padded_batch = subject.encode(ITEMS)
        assert padded_batch.attention_mask[0].sum() < padded_batch.attention_mask.shape[1], (
            "item 0 must be padded"
        )
        padded = subject.run(padded_batch).logits[0, : alone.shape[0]]
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def test_no_graph_unless_asked(both_backends):
    for subject in both_backends.values():
        batch = subject.encode(ITEMS)
        assert not subject.run(batch, residual_layers=[1]).logits.requires_grad
        out = subject.run(batch, residual_layers=[1], grad=True)
        assert out.logits.requires_grad and out.residuals[1].requires_grad


def test_weight_addressing_is_the_same_through_both_backends(both_backends):
    tl, nn = both_backends["transformer_lens"], both_backends["nnsight"]
    assert tl.keys() == nn.keys()
    for key in tl.keys():
        torch.testing.assert_close(tl.weight(key), nn.weight(key), atol=0, rtol=0)


def test_head_views_match_transformer_lens_weight_matrices(tiny_model, tiny_tok):
    """Per-head slices against the bridge's own W_Q / W_K / W_V / W_O ([layer, head, ...])."""
    subject = ul.load(tiny_model, tokenizer=tiny_tok)
    bridge = subject.bridge
    shape = subject.shape
    expected = {"q": bridge.W_Q, "k": bridge.W_K, "v": bridge.W_V, "o": bridge.W_O}
    gpt2 = shape.family == "gpt2"
    for layer in range(shape.n_layers):
        for component, tl_matrix in expected.items():
            n_heads = shape.n_heads if component in ("q", "o") else shape.n_kv_heads
            assert tl_matrix.shape[1] == n_heads
            for head in range(n_heads):
                ours = subject.weight(f"layers.{layer}.{component}.weight", head=head)
                # nn.Linear stores [out, in], Conv1D [in, out]; TransformerLens uses [in, out] per head.
                ours = ours if gpt2 else ours.T
                torch.testing.assert_close(ours, tl_matrix[layer, head], atol=1e-6, rtol=0)


def test_tied_embeddings_counted_once_and_untied_listed():
    tok = ul.tiny_tokenizer()
    tied = ul.load(ul.tiny_llama(vocab_size=len(tok)), tokenizer=tok)
    untied = ul.load(ul.tiny_llama(vocab_size=len(tok), tied=False), tokenizer=tok)
    assert tied.shape.tied_embeddings and "unembed.weight" not in tied.keys()
    assert not untied.shape.tied_embeddings and "unembed.weight" in untied.keys()
    n_tied = sum(p.numel() for p in tied.model.parameters())
    assert sum(tied.snapshot()[key].numel() for key in tied.keys()) == n_tied


def test_snapshot_restore_and_head_swap(both_backends):
    for subject in both_backends.values():
        original = subject.snapshot()
        assert all(t.device.type == "cpu" for t in original.values())
        batch = subject.encode(ITEMS)
        logits_before = subject.run(batch).logits
        with torch.no_grad():
            for param in subject.parameters():
                param.add_(torch.randn_like(param) * 0.1)
        assert not torch.allclose(subject.run(batch).logits, logits_before)
        changed = subject.snapshot()
        subject.restore(original)
        torch.testing.assert_close(subject.run(batch).logits, logits_before, atol=0, rtol=0)

        # Swap one KV head of layer 0's k back from the changed snapshot: only that head moves.
        key = "layers.0.k.weight"
        subject.restore_heads(changed, key, [1])
        spec = subject.spec(key)
        now = subject.weight(key)
        torch.testing.assert_close(spec.head_view(now, 1), spec.head_view(changed[key], 1))
        torch.testing.assert_close(spec.head_view(now, 0), spec.head_view(original[key], 0))
        others = [k for k in subject.keys() if k != key]
        assert all(torch.equal(subject.weight(k).cpu(), original[k]) for k in others)
        subject.restore(original)


def test_training_step_through_each_backend(both_backends):
    for subject in both_backends.values():
        batch = subject.encode(ITEMS)
        optimiser = torch.optim.SGD(subject.parameters(), lr=0.5)
        losses = []
        for _ in range(3):
            logits = subject.run(batch, grad=True).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                batch.labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]


def test_wrap_existing_bridge_and_nnsight_model(tiny_tok):
    from nnsight import TransformersModel

    model = ul.tiny_llama(vocab_size=len(tiny_tok))
    bridge = boot_bridge(copy.deepcopy(model), tiny_tok, "user-bridge")
    assert ul.wrap(bridge).backend_name == "transformer_lens"
    lm = TransformersModel(copy.deepcopy(model), task="text-generation", tokenizer=tiny_tok)
    wrapped = ul.wrap(lm)
    assert wrapped.backend_name == "nnsight" and wrapped.trace_kwargs() == {"remote": False}
    assert ul.wrap(lm, remote=True).trace_kwargs() == {"remote": True}


def test_wrap_errors_are_clear(tiny_tok):
    from nnsight import NNsight

    bare = NNsight(ul.tiny_llama(vocab_size=len(tiny_tok)))
    with pytest.raises(ul.ModelSourceError, match="no tokenizer"):
        ul.wrap(bare)
    with pytest.raises(ul.ModelSourceError, match="cannot wrap a object"):
        ul.wrap(object())
    with pytest.raises(ul.ModelSourceError, match="needs its tokenizer"):
        ul.load(ul.tiny_llama())
    with pytest.raises(ul.ModelSourceError, match="unknown backend"):
        ul.load(ul.tiny_llama(), tokenizer=tiny_tok, backend="jax")
    with pytest.raises(ul.ModelSourceError, match="remote=True needs backend='nnsight'"):
        ul.load("smollm2-135m", remote=True)


def test_unsupported_architecture_is_one_clear_error(tiny_tok):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tiny_tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with pytest.raises(ul.ModelSourceError, match="unsupported model architecture 'bert'"):
        ul.load(bert, tokenizer=tiny_tok, backend="nnsight")


def test_directory_sources(tmp_path, tiny_tok):
    with pytest.raises(ul.ModelSourceError, match="not a model"):
        ul.load(tmp_path)
    model = ul.tiny_llama(vocab_size=len(tiny_tok))
    model.save_pretrained(tmp_path / "m")
    tiny_tok.save_pretrained(tmp_path / "m")
    subject = ul.load(tmp_path / "m")
    batch = subject.encode(ITEMS)
    with torch.no_grad():
        expected = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(subject.run(batch).logits, expected, atol=1e-6, rtol=0)
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(ul.ModelSourceError, match="does not unpickle"):
        ul.load(tmp_path / "m")


def test_offline_hub_id_and_nonsense_sources(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ul.ModelSourceError, match="smollm2-135m"):
        ul.load("no-such-org/no-such-model")
    with pytest.raises(ul.ModelSourceError, match="unknown model source"):
        ul.load("not a model!")


def test_saved_checkpoint_loads_back_identically(tmp_path, both_backends):
    subject = both_backends["transformer_lens"]
    with torch.no_grad():
        for param in subject.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    ul.save_checkpoint(subject, tmp_path / "ckpt")
    reloaded = ul.load(tmp_path / "ckpt", backend="nnsight")
    assert reloaded.keys() == subject.keys()
    for key in subject.keys():
        torch.testing.assert_close(reloaded.weight(key), subject.weight(key), atol=0, rtol=0)
