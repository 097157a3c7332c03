"""Message records: names, the config a message carries, and what federation.json records of each message."""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

# The ClientApp's own state record (context.state): rounds joined, and the exclusion reason once excluded.
STATE = "humane"
# Config records whose values are JSON text: their top-level keys are listed as what the message held.
JSON_KEYS = {"summary", "counts"}


def config_dict(record: ConfigRecord) -> dict[str, Any]:
    """A ConfigRecord as a plain dict."""
    return dict(record.items())


def size(content: RecordDict) -> int:
    """The content's size in bytes as Flower serialises it (the records' protobuf)."""
    return recorddict_to_proto(content).ByteSize()


def keys(content: RecordDict) -> list[str]:
    """What a message holds, by name.

    `record.key` for config and metric values (a JSON value's top-level keys also as `record.key.sub`), and
    `record[n arrays]` for an array record (the model's weights, never rows).
    """
    names: list[str] = []
    for name, arrays in content.array_records.items():
        names.append(f"{name}[{len(arrays)} arrays]")
    for name, record in [*content.config_records.items(), *content.metric_records.items()]:
        for key, value in record.items():
            names.append(f"{name}.{key}")
            if key in JSON_KEYS and isinstance(value, str) and value:
                names.extend(f"{name}.{key}.{sub}" for sub in sorted(json.loads(value)))
    return sorted(names)
