"""Tiny randomly initialised models and an in-memory tokenizer: fast, offline test subjects."""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")

BASE_WORDS = [
    "The",
    "the",
    "capital",
    "of",
    "is",
    "a",
    "an",
    "and",
    "in",
    "on",
    "to",
    "for",
    "was",
    "by",
    "with",
    "from",
    "at",
    "as",
    "it",
    "this",
    "that",
    "city",
    "country",
    "river",
    "book",
    "author",
    "wrote",
    "element",
    "symbol",
    "number",
    "plus",
    "minus",
    "times",
    "equals",
    "def",
    "return",
    "import",
    "class",
    "print",
    "if",
    "else",
    "True",
    "False",
    "None",
    "x",
    "y",
    "a",
    "b",
    "+",
    "-",
    "*",
    "=",
    "(",
    ")",
    ":",
    ",",
    ".",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "11",
    "12",
    "13",
    "14",
    "15",
    "16",
    "17",
    "18",
    "19",
    "20",
]
"""Default vocabulary of the tiny word-level tokenizer (every other word maps to `<unk>`)."""


def tiny_tokenizer(extra_words: tuple[str, ...] | list[str] = ()) -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in memory: whitespace/punctuation split, no hub, no files.

    Its vocabulary is `SPECIAL_TOKENS`, `BASE_WORDS` and `extra_words`, in that order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab: dict[str, int] = {}
    for word in (*SPECIAL_TOKENS, *BASE_WORDS, *extra_words):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
        name_or_path="tiny",
    )


def tiny_llama(
    vocab_size: int = 128, seed: int = 0, n_layers: int = 2, tied: bool = True
) -> LlamaForCausalLM:
    """A random Llama with grouped-query attention (4 query heads, 2 KV heads), d_model 32."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int = 128, seed: int = 0, n_layers: int = 2) -> GPT2LMHeadModel:
    """A random GPT-2 (4 heads, d_model 32, fused QKV, tied embeddings), dropout off."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=32,
        n_layer=n_layers,
        n_head=4,
        n_positions=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()
