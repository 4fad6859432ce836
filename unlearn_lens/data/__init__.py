"""Items, where they come from (files, records, the built-in sets), and how they become batches."""

from unlearn_lens.data.batching import (
    IGNORE_INDEX,
    Batch,
    batches,
    content_labels,
    encode,
    encode_item,
)
from unlearn_lens.data.builtin_sets import BUILTIN_DOMAINS, BuiltinSets, builtin
from unlearn_lens.data.chat import chat_items, chat_prompt
from unlearn_lens.data.fields import DataError, FieldMap, record_item
from unlearn_lens.data.hf import load_hf_dataset, parse_hf_spec
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import (
    ITEM_SUFFIXES,
    as_items,
    check_overlap,
    check_spec,
    items_from_records,
    load_items,
)

__all__ = [
    "BUILTIN_DOMAINS",
    "IGNORE_INDEX",
    "ITEM_SUFFIXES",
    "Batch",
    "BuiltinSets",
    "DataError",
    "FieldMap",
    "Item",
    "as_items",
    "batches",
    "builtin",
    "chat_items",
    "chat_prompt",
    "check_overlap",
    "check_spec",
    "content_labels",
    "encode",
    "encode_item",
    "items_from_records",
    "load_hf_dataset",
    "load_items",
    "parse_hf_spec",
    "record_item",
]
