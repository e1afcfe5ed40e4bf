"""`weaver data check`: statistics and validation of data files before tuning; `weaver data pairs`: preference pairs.

    weaver data check ../shared/data/dialogsum/train.jsonl --model smollm2-135m-instruct
    weaver data check train.jsonl --dev dev.jsonl --test test.jsonl --task headline --lang zh
    weaver data check data.csv --columns '{"input": "article", "output": "summary"}' --on-error skip

Prints counts, token-length percentiles of prompts and outputs in the model's tokenizer, the language
mix, duplicates and the overlap between train/dev/test. Malformed records are listed as file:line
messages and the command exits non-zero (3), unless --on-error skip, which reports and ignores them.
A preference-pairs file ({prompt or instruction/input, chosen, rejected}) is recognised and checked as pairs.
Files are streamed: one record may be up to 32 MiB (a longer one is malformed at its line), so memory
stays bounded whatever the file; a FIFO or device is refused as not a regular file.

    weaver data pairs --from train.jsonl --strategy reference --model runs/sft --out pairs.jsonl
    weaver data pairs --from train.jsonl --strategy principles --principles my-principles.yaml --out pairs.jsonl

`data pairs` makes preference pairs for `train.objective dpo` from reference data (weaver.tuning.pairs).
"""

from __future__ import annotations

import json
import sys

from weaver.config import TASKS, DataConfig
from weaver.errors import ConfigError, DataError


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    p = sub.add_parser("check", help="validate data files and print their statistics",
                       description="Validate data files and print counts, token lengths, languages, duplicates "
                                   "and overlap between splits.")
    p.add_argument("file", help="training (or only) data file: jsonl/json/csv/tsv/parquet or a datasets folder")
    p.add_argument("--dev", help="dev file, checked for overlap with FILE")
    p.add_argument("--test", help="test file, checked for overlap with FILE and --dev")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="model whose tokenizer and chat template measure lengths (default: %(default)s); "
                        "'none' skips token statistics")
    p.add_argument("--task", default="summarize", choices=TASKS,
                   help="task template for prompts (default: %(default)s)")
    p.add_argument("--lang", default="en", choices=("en", "zh"), help="instruction language (default: %(default)s)")
    p.add_argument("--columns", help='JSON map of our fields to your columns, e.g. \'{"output": "summary"}\'')
    p.add_argument("--on-error", default="fail", choices=("fail", "skip"),
                   help="fail: list malformed records and exit non-zero; skip: report and ignore them")
    p.add_argument("--max-seq-len", type=int, default=DataConfig.max_seq_len,
                   help="count records whose prompt+output exceed this (default: %(default)s)")
    p.add_argument("--max-output-tokens", type=int, default=DataConfig.max_output_tokens,
                   help="outputs longer than this many tokens are malformed (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    _add_pairs(sub)


def _add_pairs(sub) -> None:
    p = sub.add_parser("pairs", help="make preference pairs (for train.objective dpo) from reference data",
                       description="Make preference pairs from SFT records: chosen = the reference; rejected = the "
                                   "model's own reply (--strategy reference) or the reference rewritten by the model "
                                   "to break a principle (--strategy principles).")
    p.add_argument("--from", dest="source", required=True, help="SFT data file (records with a reference output)")
    p.add_argument("--strategy", required=True, choices=("reference", "principles"),
                   help="reference: rejected = the model's reply; principles: rejected = a principle-breaking rewrite")
    p.add_argument("--out", required=True, help="pairs file to write (JSON Lines)")
    p.add_argument("--model", default="smollm2-135m-instruct",
                   help="model (or tuned run) that writes the rejected replies (default: %(default)s)")
    p.add_argument("--task", default="summarize", choices=TASKS,
                   help="task template for prompts (default: %(default)s)")
    p.add_argument("--lang", default="en", choices=("en", "zh"), help="instruction language (default: %(default)s)")
    p.add_argument("--columns", help='JSON map of our fields to your columns, e.g. \'{"output": "summary"}\'')
    p.add_argument("--on-error", default="fail", choices=("fail", "skip"), help="malformed records: fail or skip")
    p.add_argument("--principles", default=None,
                   help="YAML of principles ({default: {name: instruction}, tasks: {TASK: {...}}}; default: the "
                        "shipped too_long, off_topic, invents_fact, wrong_tone)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N records")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-record principle draw (default: %(default)s)")


def _data_config(args) -> DataConfig:
    columns = {}
    if args.columns:
        try:
            columns = json.loads(args.columns)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--columns is not valid JSON ({exc.msg}); e.g. '{{\"output\": \"summary\"}}'") from None
        if not isinstance(columns, dict):
            raise ConfigError("--columns must be a JSON object mapping our field names to your column names")
    template = "{input}" if args.task == "custom" else None
    return DataConfig(task=args.task, lang=args.lang, columns=columns, on_error=args.on_error,
                      max_seq_len=args.max_seq_len, max_output_tokens=args.max_output_tokens, template=template)


def run(args) -> int:
    if args.data_command == "pairs":
        return _run_pairs(args)
    return _run_check(args)


def _run_pairs(args) -> int:
    from weaver.tuning.pairs import generate_pairs

    args.max_seq_len, args.max_output_tokens = DataConfig.max_seq_len, DataConfig.max_output_tokens
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    report = generate_pairs(args.source, args.strategy, args.out, args.model, _data_config(args),
                            principles_file=args.principles, limit=args.limit, batch_size=args.batch_size,
                            seed=args.seed)
    skipped = report["skipped_same"] + report["skipped_empty"]
    print(f"wrote {report['pairs']} pairs to {report['out']} from {report['records']} records "
          f"({skipped} skipped: the model's text was empty or the same as the reference)")
    if report.get("principles"):
        print("principles: " + ", ".join(f"{k} {v}" for k, v in report["principles"].items()))
    return 0


def _run_check(args) -> int:
    from weaver.data.check import check_files, format_stats
    from weaver.data.readers import MAX_LISTED

    data_cfg = _data_config(args)
    tokenizer = None
    if args.model.lower() != "none":
        from weaver.models.loading import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    files = {"train": args.file}
    files.update({name: path for name, path in (("dev", args.dev), ("test", args.test)) if path})
    report = check_files(files, data_cfg, tokenizer)
    problems = [(f["summary"], f["problems"]) for f in report["files"].values() if f["problems"]]
    if args.json:
        for f in report["files"].values():
            f["problems"] = [str(p) for p in f["problems"]]
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_stats(report, None if tokenizer is None else args.model))
    for summary, probs in problems:
        listed = "\n  ".join(str(p) for p in probs[:MAX_LISTED])
        more = f"\n  ... and {len(probs) - MAX_LISTED} more" if len(probs) > MAX_LISTED else ""
        print(f"{summary}:\n  {listed}{more}", file=sys.stderr)
    if problems and args.on_error == "fail":
        raise DataError("malformed records found (listed above): fix them, or rerun with --on-error skip")
    return 0
