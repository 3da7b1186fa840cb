"""``synth-pipeline`` command line: a thin front-end over the library stages.

Exit codes: 0 success, 2 bad input or configuration (typed error, no traceback), 3 gate failed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from synth_pipeline.errors import OutputError, SynthPipelineError


def _cmd_schema_infer(a: argparse.Namespace) -> int:
    from synth_pipeline.ingest import Source, read_source
    from synth_pipeline.model_files import check_output_file
    from synth_pipeline.schema import infer_schema

    if a.output:  # before reading the data
        check_output_file(a.output, force=a.force, what="-o/--output", formats=SCHEMA_SUFFIXES)
    df = read_source(Source(path=a.data, encoding=a.encoding, table=a.table, query=a.query))
    schema = infer_schema(
        df, time_index=a.time_index, entity_key=a.entity_key, sequence_length=a.sequence_length,
        name=a.name or Path(a.data).stem,
    )
    try:
        text = schema.to_yaml(a.output) if a.output else schema.to_yaml()
    except OSError as e:
        raise OutputError(f"-o/--output '{a.output}' cannot be written ({e.strerror or type(e).__name__}); "
                          f"choose a writable path") from None
    if a.output:
        print(f"schema written to {a.output} ({len(schema.columns)} columns); review and pin it")
    else:
        print(text)
    for c in schema.columns:
        for note in c.notes:
            print(f"  note: {c.name}: {note}", file=sys.stderr)
    return 0


def _load_typed(a: argparse.Namespace):
    from synth_pipeline.ingest import Source, load_dataset
    from synth_pipeline.schema import DatasetSchema

    schema = DatasetSchema.from_yaml(a.schema)
    entities = Source(path=a.entities) if getattr(a, "entities", None) else None
    df = load_dataset(Source(path=a.data, encoding=getattr(a, "encoding", "utf-8")), schema, entities)
    return df, schema


def _cmd_validate(a: argparse.Namespace) -> int:
    from synth_pipeline.validate import validate

    df, schema = _load_typed(a)
    report = validate(df, schema)
    stats = report.statistics
    print(f"validation passed: {stats.get('successful_expectations')}/{stats.get('evaluated_expectations')} expectations")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from synth_pipeline.config import ModelConfig, check_device, parse_overrides
    from synth_pipeline.model_files import check_model_out
    from synth_pipeline.synthesizer import Synthesizer

    overrides = parse_overrides(a.set)
    overrides.setdefault("seed", a.seed)
    if a.device:
        overrides["device"] = a.device
    cfg = ModelConfig.from_preset(a.preset, overrides)
    if cfg.distributed and "LOCAL_RANK" in os.environ and cfg.device in ("auto", "cuda"):
        import torch  # under torchrun: one GPU per rank

        if torch.cuda.is_available():
            cfg = ModelConfig.from_preset(a.preset, {**overrides, "device": f"cuda:{os.environ['LOCAL_RANK']}"})
    check_device(cfg.device)  # before reading any data
    check_model_out(a.out, force=a.force)  # never replace a folder this tool did not write
    df, schema = _load_typed(a)
    if not a.skip_validation:
        from synth_pipeline.validate import validate

        t0 = time.perf_counter()
        print(f"[train] validating {len(df)} rows", file=sys.stderr, flush=True)
        validate(df, schema)
        print(f"[train] validated in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    print(f"[train] training ({cfg.preset} preset)", file=sys.stderr, flush=True)
    syn = Synthesizer(schema, cfg).fit(df)
    from synth_pipeline.models.distributed import is_main

    if is_main():  # under torchrun every rank holds the same weights; rank 0 writes them
        syn.save(a.out)
        print(f"model written to {a.out} (trained in {time.perf_counter() - t0:.1f}s, preset {cfg.preset})")
    return 0


def _cmd_generate(a: argparse.Namespace) -> int:
    from synth_pipeline.model_files import check_output_file
    from synth_pipeline.streaming import check_n_sequences, write_samples
    from synth_pipeline.synthesizer import Synthesizer

    check_n_sequences(a.n, a.max_sequences, "-n")  # before loading the model
    if a.shards is not None:
        return _generate_shards(a)
    fmt = check_output_file(a.output, force=a.force, what="-o/--output")
    syn = Synthesizer.load(a.model_dir, device=a.device or "auto")
    t0 = time.perf_counter()
    say = (lambda line: print(f"[generate] {line}", file=sys.stderr, flush=True)) if a.n > (a.chunk_size or 4096) else None
    stats = write_samples(syn, a.n, a.output, seed=a.seed, chunk_size=a.chunk_size, fmt=fmt, progress=say)
    dt = time.perf_counter() - t0
    print(f"{a.n} sequences ({stats['rows']} rows, {fmt}) written to {a.output} in {dt:.1f}s")
    return 0


def _generate_shards(a: argparse.Namespace) -> int:
    """``--shards N``: the release's shard functions in one process (``shards.write_shards``): seeded
    Parquet parts in the ``-o`` folder plus ``_manifest.json`` (sha256 and rows per part; the leading
    underscore keeps ``pandas.read_parquet(folder)`` / ``pyarrow.dataset`` reading the parts only)."""
    from synth_pipeline.errors import ConfigError
    from synth_pipeline.io_utils import atomic_write_json
    from synth_pipeline.shards import plan_shards, write_shard
    from synth_pipeline.synthesizer import Synthesizer

    out = Path(a.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"-o/--output '{out}' is a file; with --shards it names a folder for the parts")
    if out.is_dir() and any(out.iterdir()) and not a.force:
        raise ConfigError(f"-o/--output '{out}' is not empty; choose a new folder or pass --force to replace its parts")
    specs = plan_shards(a.n, a.seed, a.shards)  # validates --shards before the model loads
    syn = Synthesizer.load(a.model_dir, device=a.device or "auto")
    if out.is_dir() and a.force:
        for old in out.glob("part-*.parquet"):
            old.unlink()
    t0 = time.perf_counter()
    parts = []
    for spec in specs:
        parts.append(write_shard(syn, spec, out))
        print(f"[generate] shard {spec.index + 1}/{len(specs)}: {spec.count} sequences", file=sys.stderr, flush=True)
    atomic_write_json(out / "_manifest.json", {"n_sequences": a.n, "seed": a.seed, "shards": len(specs),
                                              "rows": sum(p["rows"] for p in parts), "parts": parts})
    print(f"{a.n} sequences ({sum(p['rows'] for p in parts)} rows) written to {out} as {len(parts)} Parquet "
          f"part(s) in {time.perf_counter() - t0:.1f}s")
    return 0


def _cmd_release(a: argparse.Namespace) -> int:
    from synth_pipeline.errors import GateFailedError
    from synth_pipeline.pipeline import run_release

    try:
        res = run_release(a.config, a.date, overwrite=a.overwrite)
    except GateFailedError as e:
        r = e.result
        print(f"error: {e}", file=sys.stderr)
        if r is not None:
            print(json.dumps(r.to_dict(), indent=1, default=str))
        return e.exit_code
    print(json.dumps(res.to_dict(), indent=1, default=str))
    print(f"release {res.status}: {res.release_path}")
    print(f"model: {res.model_uri} (champion: {res.champion_uri})")
    if res.ui_command:
        print(f"MLflow UI: {res.ui_command}")
    return 0


def _date_arg(text: str) -> str:
    import datetime as dt

    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a date; use YYYY-MM-DD") from None


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from synth_pipeline.evaluation import GateConfig, evaluate, read_table
    from synth_pipeline.model_files import check_output_dir
    from synth_pipeline.schema import DatasetSchema

    check_output_dir(a.out, "--out")  # before reading tables or computing metrics
    schema = DatasetSchema.from_yaml(a.schema)
    gate = GateConfig.from_yaml(a.gate) if a.gate else GateConfig()
    tables = {}
    for role in ("train", "holdout", "synthetic"):
        path = getattr(a, role)
        print(f"[evaluate] reading {role} table {path}", file=sys.stderr, flush=True)
        tables[role] = read_table(path, role)
    result = evaluate(
        tables["train"], tables["holdout"], tables["synthetic"], schema, gate_config=gate, out_dir=a.out,
        seed=a.seed, progress=not a.quiet,
    )
    print(f"gate {'PASSED' if result.passed else 'FAILED'}: {result.gate.reason}")
    for c in result.gate.checks:
        print(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.explanation}")
    print(f"report: {result.paths['report']}")
    return 0 if result.passed else 3


def _cmd_demo(a: argparse.Namespace) -> int:
    from synth_pipeline.demo import run_demo

    return run_demo(a.workdir, preset=a.preset, dataset=a.dataset)


def _seed_arg(text: str) -> int:
    from synth_pipeline.config import MAX_SEED

    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"'{text}' is not a valid seed; use an integer from 0 to {MAX_SEED}")
    return v


def _positive_arg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive integer")
    return v


def _encoding_arg(text: str) -> str:
    import codecs

    try:
        codecs.lookup(text)
    except LookupError:
        raise argparse.ArgumentTypeError(
            f"unknown text encoding '{text}'; use a Python codec name such as utf-8, latin-1 or cp1252"
        ) from None
    return text


def _device_arg(text: str) -> str:
    from synth_pipeline.config import check_device
    from synth_pipeline.errors import ConfigError

    try:
        return check_device(text)  # syntax and availability, before any data is read
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


SCHEMA_SUFFIXES = {".yaml": "yaml", ".yml": "yaml"}
DEVICE_HELP = "auto (default: a GPU when available) | cpu | cuda | cuda:N | mps; checked before any data is read"
SEED_HELP = "random seed, an integer from 0 to 4294967295 (default: 0)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synth-pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sch = sub.add_parser("schema", help="schema tools", description="schema tools")
    sch_sub = sch.add_subparsers(dest="schema_command", required=True, metavar="SUBCOMMAND")
    inf = sch_sub.add_parser("infer", help="propose a schema from data", description="propose a schema from data")
    inf.add_argument("data", help="CSV/Parquet path or SQLAlchemy URI (read-only, e.g. sqlite:///src.db)")
    inf.add_argument("--entity-key", help="column identifying each entity (one sequence per entity)")
    inf.add_argument("--time-index", help="time column (guessed when omitted)")
    inf.add_argument("--sequence-length", type=_positive_arg, help="window length for long single series")
    inf.add_argument("--table", help="SQL table (with a URI)")
    inf.add_argument("--query", help="SQL query (with a URI): exactly one read-only SELECT (or WITH ... SELECT)")
    inf.add_argument("--encoding", default="utf-8", type=_encoding_arg, help="text encoding of a CSV file (default: utf-8)")
    inf.add_argument("--name", help="dataset name written into the schema (default: the file name)")
    inf.add_argument("-o", "--output", help="write the schema YAML here (.yaml/.yml) instead of printing it")
    inf.add_argument("--force", action="store_true", help="replace an existing --output file")
    inf.set_defaults(func=_cmd_schema_infer)

    def data_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("data", help="event table: CSV/Parquet path")
        sp.add_argument("--schema", required=True, help="schema YAML")
        sp.add_argument("--entities", help="optional entity table joined on the entity key")
        sp.add_argument("--encoding", default="utf-8", type=_encoding_arg,
                        help="text encoding of CSV inputs (default: utf-8)")

    val = sub.add_parser("validate", help="validate data against a schema (Great Expectations)",
                         description="validate data against a schema (Great Expectations)")
    data_args(val)
    val.set_defaults(func=_cmd_validate)

    tr = sub.add_parser("train", help="train a synthesizer", description="train a synthesizer")
    data_args(tr)
    tr.add_argument("--out", required=True,
                    help="model folder to write: new, empty, or a model folder written by this tool")
    tr.add_argument("--force", action="store_true",
                    help="replace --out even if it is a folder this tool did not write (its contents are deleted)")
    tr.add_argument("--preset", default="fast", help="fast | default | quality (default: fast)")
    tr.add_argument("--seed", type=_seed_arg, default=0, help=SEED_HELP)
    tr.add_argument("--device", type=_device_arg, help=DEVICE_HELP)
    tr.add_argument("--set", action="append", metavar="model.KEY=VALUE",
                    help="override a model option (repeatable), e.g. --set model.vae_steps=100")
    tr.add_argument("--skip-validation", action="store_true", help="skip the Great Expectations validation")
    tr.set_defaults(func=_cmd_train)

    gen = sub.add_parser("generate", help="generate a synthetic table from a model folder",
                         description="generate a synthetic table from a model folder (streamed in chunks)")
    gen.add_argument("model_dir", help="model folder written by 'train --out'")
    gen.add_argument("-n", type=_positive_arg, required=True, help="number of sequences (entities) to generate")
    gen.add_argument("-o", "--output", required=True,
                     help="output file; the format follows the suffix: .parquet (.pq) or .csv")
    gen.add_argument("--force", action="store_true", help="replace an existing --output file")
    gen.add_argument("--seed", type=_seed_arg, default=0, help=SEED_HELP)
    gen.add_argument("--device", type=_device_arg, help=DEVICE_HELP)
    gen.add_argument("--max-sequences", type=_positive_arg,
                     help="refuse -n above this (default: $SYNTH_PIPELINE_MAX_SEQUENCES or 1000000)")
    gen.add_argument("--chunk-size", type=_positive_arg,
                     help="sequences sampled and written per chunk (default: about 200000 rows per chunk); "
                          "bounds memory")
    gen.add_argument("--shards", type=_positive_arg,
                     help="write N seeded Parquet parts into the -o folder (part-00000.parquet, ... and "
                          "_manifest.json): the same shards a release's mapped generate tasks write")
    gen.set_defaults(func=_cmd_generate)

    rel = sub.add_parser("release", help="run one synthetic release from a dataset config (exit 3: gate failed)",
                         description="run one synthetic release from a dataset config (exit 3: gate failed)")
    rel.add_argument("config", help="dataset config YAML (see synth_pipeline/configs/)")
    rel.add_argument("--date", required=True, type=_date_arg, help="logical date YYYY-MM-DD (the release id)")
    rel.add_argument("--overwrite", action="store_true", help="replace a different release of the same date")
    rel.set_defaults(func=_cmd_release)

    ev = sub.add_parser("evaluate", help="audit a synthetic table: fidelity, memorization vs holdout, gate, report",
                        description="audit a synthetic table: fidelity, memorization vs holdout, gate, report")
    ev.add_argument("--train", required=True, help="real train table the model was fitted on (CSV/Parquet)")
    ev.add_argument("--holdout", required=True, help="real holdout table of entities the model never saw (CSV/Parquet)")
    ev.add_argument("--synthetic", required=True, help="synthetic table to audit (CSV/Parquet)")
    ev.add_argument("--schema", required=True, help="schema YAML")
    ev.add_argument("--out", required=True, help="output folder for metrics.json, gate.json, report.html")
    ev.add_argument("--gate", help="gate config YAML (thresholds); defaults otherwise")
    ev.add_argument("--seed", type=_seed_arg, default=0, help=SEED_HELP)
    ev.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="run a shipped example (pollution windows; or nasdaq100) end to end",
                          description="run a shipped example end to end: ingest, validate, split, train, register, "
                                      "generate, evaluate, gate, publish")
    demo.add_argument("--workdir", default=".demo", help="working folder for data, releases and MLflow (default: .demo)")
    demo.add_argument("--preset", default="fast", help="model preset: fast | default | quality (default: fast)")
    demo.add_argument("--dataset", default="pollution", choices=["pollution", "nasdaq100"],
                      help="shipped example: pollution (24-hour windows of one series, default) or nasdaq100 (a "
                           "103-stock panel: too few entities for the fast model to generalise, the gate refuses it)")
    demo.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SynthPipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        failures = getattr(e, "failures", None)
        if failures:
            print(json.dumps(failures, indent=1, default=str), file=sys.stderr)
        return e.exit_code
    except MemoryError:
        print("error: out of memory; generate fewer sequences (-n), use a smaller --chunk-size, or use a "
              "machine with more memory", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave cannot be read or written (permissions, disk full, ...)
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        print(f"error: cannot access{where}: {e.strerror or type(e).__name__}; check the path and its "
              f"permissions", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
