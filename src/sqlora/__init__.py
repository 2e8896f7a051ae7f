"""sqlora: fine-tune a small language model for Text-to-SQL with QLoRA, as a DVC pipeline."""

import logging

__version__ = "0.1.0"

# bitsandbytes warns on import, on CPUs with AVX512-BF16, that an optional kernel package is
# missing; nothing for a user to act on (training turns that fast path off anyway).
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
