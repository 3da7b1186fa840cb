"""Launching data-parallel training from a release: the train stage runs N ranks under
``torch.distributed.run`` on its staged training table (``fit_with_torchrun``), each rank this
module's entry point. Kept apart from ``distributed.py`` (which the model imports) because it
builds whole Synthesizers: no import cycle model -> launcher -> synthesizer -> model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from synth_pipeline.models.distributed import is_main


def fit_with_torchrun(schema: Any, train_parquet: Path, config: Any, processes: int,
                      timeout: float | None = None) -> Any:
    """Train in ``processes`` ranks under ``torch.distributed.run`` (the release's train stage with
    ``model.distributed`` and ``model.processes > 1``): rank 0 writes the model to a private temporary
    folder, which is loaded and returned (the caller saves it). The ranks read the staged training
    table; nothing else leaves the stage."""
    import json
    import subprocess
    import sys
    import tempfile

    from synth_pipeline.errors import ConfigError
    from synth_pipeline.synthesizer import Synthesizer

    with tempfile.TemporaryDirectory(prefix="synth-ddp-") as tmp:
        schema_path, cfg_path = Path(tmp) / "schema.yaml", Path(tmp) / "model.json"
        schema.to_yaml(schema_path)
        cfg_path.write_text(json.dumps(config.to_dict()))
        out = Path(tmp) / "model"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "synth_pipeline.models.launch", str(schema_path), str(train_parquet), str(cfg_path), str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise ConfigError(f"distributed training ({processes} processes under torchrun) failed with exit code "
                              f"{res.returncode}; set model.processes to 1 to train in one process. Last output:\n"
                              + res.stderr[-2000:])
        return Synthesizer.load(out, device=config.device)


def _main(argv: list[str]) -> int:
    """One rank: ``python -m synth_pipeline.models.launch SCHEMA TRAIN_PARQUET MODEL_JSON OUT``."""
    import json

    import pandas as pd

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import DatasetSchema
    from synth_pipeline.synthesizer import Synthesizer

    schema_path, data, cfg_path, out = argv
    schema = DatasetSchema.from_yaml(schema_path)
    cfg = ModelConfig.from_dict(json.loads(Path(cfg_path).read_text()))
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "device": f"cuda:{os.environ['LOCAL_RANK']}"})
    syn = Synthesizer(schema, cfg).fit(coerce(pd.read_parquet(data), schema, source="staged train.parquet"))
    if is_main():
        syn.save(out)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
