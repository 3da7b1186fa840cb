"""SDV PARSynthesizer on one benchmark job (runs in benchmarks/.peers/sdv, never imported by the
package). Entity key -> sequence key, time -> sequence index, static columns -> context columns;
SDV's default 128 epochs unless ``--epochs`` is given."""

from __future__ import annotations

import warnings

import torch
from _common import Clock, load_job, parse_args, peak_rss_mb, write_result

warnings.filterwarnings("ignore")


def main() -> None:
    a = parse_args({"epochs": 128, "seed": 0})
    torch.manual_seed(a.seed)
    train, meta = load_job(a.work)
    from sdv.metadata import Metadata
    from sdv.sequential import PARSynthesizer

    key, time_col = meta["entity_key"], meta["time_index"]
    md = Metadata.detect_from_dataframe(train, table_name="t")
    md.update_column(column_name=key, table_name="t", sdtype="id")
    md.update_column(column_name=time_col, table_name="t", sdtype="datetime")
    for c in meta["numeric"]:
        md.update_column(column_name=c, table_name="t", sdtype="numerical")
    for c in meta["categorical"]:
        md.update_column(column_name=c, table_name="t", sdtype="categorical")
    md.set_sequence_key(key, table_name="t")
    md.set_sequence_index(time_col, table_name="t")
    clock = Clock()
    syn = PARSynthesizer(md, context_columns=meta["static"], epochs=a.epochs, cuda=False, verbose=False)
    syn.fit(train)
    fit_s = clock.lap()
    out = syn.sample(num_sequences=meta["n_synthetic"])
    sample_s = clock.lap()
    write_result(a.out, out, {"synthesizer": "sdv-par", "fit_seconds": fit_s, "sample_seconds": sample_s,
                              "peak_rss_mb": peak_rss_mb(), "settings": {"epochs": a.epochs},
                              "torch_threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
