"""Rich rendering of `unlearn-lens inspect`: architecture summary and next-token predictions."""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table

from unlearn_lens.data.items import Item
from unlearn_lens.models.subject import Subject


def next_token_predictions(
    subject: Subject, prompt: str, top_k: int = 5
) -> list[tuple[str, float]]:
    """The `top_k` most likely next tokens after `prompt`, with their probabilities."""
    batch = (
        subject.encode([Item(text=prompt)])
        if len(subject.tokenizer(prompt)["input_ids"]) > 1
        else None
    )
    if batch is None:
        raise ValueError(f"prompt {prompt!r} is too short: give at least two tokens")
    logits = subject.run(batch).logits[0, -1].double()
    if top_k > logits.shape[-1]:
        raise ValueError(f"--top-k {top_k} is more than the vocabulary's {logits.shape[-1]} tokens")
    probs = torch.softmax(logits, dim=-1)
    values, indices = probs.topk(top_k)
    return [
        (subject.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)
    ]


def print_inspection(console: Console, subject: Subject, prompt: str, top_k: int = 5) -> None:
    """Print the model summary table and the top next-token predictions."""
    info = subject.info()
    shape = info.shape
    summary = Table(title="Model", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in (
        ("source", info.source),
        ("backend", info.backend),
        ("family", shape.family),
        ("layers", shape.n_layers),
        ("heads (query / key-value)", f"{shape.n_heads} / {shape.n_kv_heads}"),
        ("d_model / d_head", f"{shape.d_model} / {shape.d_head}"),
        ("vocabulary", f"{shape.vocab_size:,}"),
        ("tied embeddings", "yes" if shape.tied_embeddings else "no"),
        ("parameters", f"{info.n_parameters:,}"),
        ("dtype / device", f"{info.dtype} / {info.device}"),
    ):
        summary.add_row(label, str(value))
    console.print(summary)
    predictions = Table(title=f"Next token after {prompt!r}", title_justify="left")
    predictions.add_column("rank", justify="right")
    predictions.add_column("token")
    predictions.add_column("probability", justify="right")
    for rank, (token, prob) in enumerate(next_token_predictions(subject, prompt, top_k), start=1):
        predictions.add_row(str(rank), repr(token), f"{prob:.3f}")
    console.print(predictions)
