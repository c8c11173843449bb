__version__ = "0.0.1"

import logging
# bitsandbytes, imported by peft and transformers as much as by learnft, logs on an AVX512-BF16 CPU that the optional `kernels`
# package is absent and that it falls back to its own kernel: a notice about the machine, not about the run. One switch, here.
logging.getLogger('bitsandbytes.backends.cpu.ops').setLevel(logging.ERROR)

# Lessons are imported lazily, so `import learnft` is instant and `learnft.models.load_smollm2()` just works.
_LESSONS = ('models', 'templates', 'formats', 'encode', 'packing', 'lora', 'quant', 'qlora', 'zero', 'speed', 'tools', 'config', 'dist', 'checkpoint', 'trainer', 'chat', 'export', 'web', 'lab', 'cli', 'exercises')

def __getattr__(name):
    if name in _LESSONS:
        import importlib
        return importlib.import_module(f'.{name}', __name__)
    raise AttributeError(f"module 'learnft' has no attribute {name!r}")
