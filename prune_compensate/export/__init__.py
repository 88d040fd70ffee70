"""Export a pruned decoder to the layouts inference engines load: a Nemotron-NAS ("DeciLM")
folder, or a GGUF file of llama.cpp's architecture ``deci`` (``export_``, ``pc export``)."""

from .run import ExportConfig, ExportResult, export_

__all__ = ["ExportConfig", "ExportResult", "export_"]
