"""Models: the catalog of embedded models, loading (catalog name, HF folder, .gguf, tuned run), export."""

from weaver.models.catalog import CATALOG, DEFAULT_MODEL, CatalogEntry, find_entry

__all__ = ["CATALOG", "DEFAULT_MODEL", "CatalogEntry", "find_entry"]
