"""Items, where they come from (files, records, the built-in sets), and how they become batches."""

from unlearn_lens.data.batching import IGNORE_INDEX, Batch, batches, encode, encode_item
from unlearn_lens.data.builtin_sets import BUILTIN_DOMAINS, BuiltinSets, builtin
from unlearn_lens.data.items import Item
from unlearn_lens.data.loaders import ITEM_SUFFIXES, DataError, check_overlap, items_from_records, load_items

__all__ = [
    "BUILTIN_DOMAINS",
    "IGNORE_INDEX",
    "ITEM_SUFFIXES",
    "Batch",
    "BuiltinSets",
    "DataError",
    "Item",
    "batches",
    "builtin",
    "check_overlap",
    "encode",
    "encode_item",
    "items_from_records",
    "load_items",
]
