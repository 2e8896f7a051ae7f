"""sqlora: fine-tune a small language model for Text-to-SQL with QLoRA, as a DVC pipeline."""

__version__ = "0.1.0"
