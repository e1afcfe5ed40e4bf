"""Data: readers (jsonl/json/csv/tsv/parquet/datasets folders), validation, task templates, splits, augmentation."""
