"""Names that become one path component: a dataset name, a release id, a registered model name.

Owned here (not by the config or the release modules) so that both check names without importing
each other: :mod:`synth_pipeline.dataset_config` checks a config's names, :mod:`synth_pipeline.release_format`
a release's dataset and id.
"""

from __future__ import annotations

import re
from typing import Any

from synth_pipeline.errors import ConfigError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_name(name: Any, what: str = "dataset name") -> str:
    """A dataset name / release id usable as one path component (no traversal, no hidden names)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ConfigError(
            f"{what} {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            f"letter or digit, without '..' (it becomes a folder name)"
        )
    return name
