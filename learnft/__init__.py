__version__ = "0.0.1"

import logging
# bitsandbytes, imported by peft and transformers as much as by learnft, logs on an AVX512-BF16 CPU that the optional `kernels`
# package is absent and that it falls back to its own kernel: a notice about the machine, not about the run. One switch, here.
logging.getLogger('bitsandbytes.backends.cpu.ops').setLevel(logging.ERROR)

import warnings
# peft asks every model it wraps for `is_gradient_checkpointing`, an alias transformers 5 deprecates: a FutureWarning between
# two libraries, printed into the middle of a learner's run (five times in `make lab`). Only that one message is silenced.
warnings.filterwarnings('ignore', message='`is_gradient_checkpointing` is deprecated', category=FutureWarning)

# Lessons are imported lazily, so `import learnft` is instant and `learnft.models.load_smollm2()` just works.
_LESSONS = ('models', 'templates', 'formats', 'encode', 'packing', 'lora', 'quant', 'qlora', 'zero', 'speed', 'tools', 'config', 'dist', 'checkpoint', 'trainer', 'chat', 'export', 'web', 'lab', 'cli', 'exercises')

def __getattr__(name):
    if name in _LESSONS:
        import importlib
        return importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f"module 'learnft' has no attribute {name!r}")
